"""Quantized loading: which library quantizes each method on each device, and what it costs.

``--mmlu-quantization`` names a method; this module turns it into the transformers
quantization config for the device the model runs on, or into one line saying why the
machine cannot run it and what would:

- ``int8``, ``int4``, ``fp8``: torchao weight-only (``TorchAoConfig``). Weights are stored
  quantized and dequantized inside each linear layer; activations stay in the model dtype.
  On CPU, int4 is torchao's ``IntxWeightOnlyConfig`` (int4 values with one scale per group
  of 32, stored one per byte: int4's accuracy at int8's size; torchao 0.18 has no packed
  int4 CPU layout). On CUDA int4 is tinygemm's packed layout (bfloat16 activations).
- ``nf4``, ``bnb-int8``: bitsandbytes 4-bit NormalFloat and LLM.int8(); CUDA only.

A checkpoint that is already quantized (GPTQ, AWQ, compressed-tensors, a saved torchao
model: a ``quantization_config`` in its config.json) loads as it is; its method is named in
the header and the report.  Byte counts of quantized weights are their stored bytes
(``stored_bytes``), which is what the memory planner and the report use.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .workers import cuda_indices

INSTALL = "pip install 'pytest-mmlu[quant]'"
INT4_GROUP = 32  # divides every hidden size in use (SmolLM2's 576 is not a multiple of 128)
NF4_BLOCK = 64  # bitsandbytes' 4-bit block, one 8-bit absmax each


class QuantizationUnavailable(Exception):
    """This machine cannot run the method (or lacks its library); the message says what would."""


@dataclass(frozen=True)
class Method:
    name: str
    library: str  # the Python package that quantizes
    what: str  # what the weights become
    devices: tuple[str, ...]
    min_capability: tuple[int, int] | None = None  # CUDA compute capability needed


METHODS = {
    "int8": Method("int8", "torchao", "8-bit integer weights, one scale per output row", ("cpu", "cuda")),
    "int4": Method(
        "int4",
        "torchao",
        f"4-bit integer weights, one scale and zero point per {INT4_GROUP} weights",
        ("cpu", "cuda"),
        (8, 0),
    ),
    "fp8": Method("fp8", "torchao", "float8 (e4m3) weights, one scale per output row", ("cpu", "cuda"), (8, 9)),
    "nf4": Method(
        "nf4", "bitsandbytes", f"4-bit NormalFloat weights in blocks of {NF4_BLOCK}, double-quantized scales", ("cuda",)
    ),
    "bnb-int8": Method("bnb-int8", "bitsandbytes", "LLM.int8(): 8-bit weights, outlier features in 16 bits", ("cuda",)),
}


@dataclass(frozen=True)
class QuantPlan:
    """What to pass to ``from_pretrained`` and what to say about it."""

    method: str
    config: Any  # a transformers quantization config
    dtype: str  # the activations' dtype the method computes in
    description: str  # "int8 (torchao Int8WeightOnlyConfig)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "library": METHODS[self.method].library,
            "description": self.description,
            "pre_quantized": False,
        }


def _works_on(device_kind: str) -> list[str]:
    return [m.name for m in METHODS.values() if device_kind in m.devices]


def plan(
    method: str,
    device: str,
    dtype: str,
    dtype_setting: str = "auto",
    *,
    capability: Callable[[int], tuple[int, int]] | None = None,
    device_name: Callable[[int], str] | None = None,
    installed: Callable[[str], bool] | None = None,
) -> QuantPlan:
    """The quantization of ``method`` for a model on ``device`` (``cuda:0+cuda:1`` for a
    spread model) whose activations would be ``dtype``; raise QuantizationUnavailable with one
    line. ``capability``, ``device_name`` and ``installed`` are torch.cuda's and importlib's by
    default; tests pass fakes."""
    spec = METHODS[method]
    kind = "cuda" if device.startswith("cuda") else "cpu"
    if kind not in spec.devices:
        raise QuantizationUnavailable(
            f"--mmlu-quantization={method} ({spec.library}) runs on CUDA only; this run is on "
            f"{device}: on CPU use {', '.join(_works_on('cpu'))} (torchao)"
        )
    if kind == "cuda" and spec.min_capability is not None:
        capability, device_name = _cuda_probes(capability, device_name)
        for index in cuda_indices(device):
            have = tuple(capability(index))
            if have < spec.min_capability:
                need = ".".join(map(str, spec.min_capability))
                usable = [m for m in _works_on("cuda") if (METHODS[m].min_capability or (0, 0)) <= have]
                raise QuantizationUnavailable(
                    f"--mmlu-quantization={method} needs CUDA compute capability {need} or newer; "
                    f"cuda:{index} ({device_name(index)}) is {have[0]}.{have[1]}: use "
                    f"{', '.join(usable)}"
                )
    installed = installed or (lambda name: importlib.util.find_spec(name) is not None)
    if not installed(spec.library):
        raise QuantizationUnavailable(
            f"--mmlu-quantization={method} needs {spec.library}, which is not installed: {INSTALL}"
        )
    if method == "int4" and kind == "cuda":
        if dtype_setting not in ("auto", "bfloat16"):
            raise QuantizationUnavailable(
                f"--mmlu-quantization=int4 on CUDA computes in bfloat16 (tinygemm); "
                f"--mmlu-dtype={dtype_setting} cannot be used with it: pass bfloat16 or auto"
            )
        dtype = "bfloat16"
    config, name = _config(method, kind, dtype)
    return QuantPlan(method, config, dtype, f"{method} ({spec.library} {name})")


def _cuda_probes(capability: Any, device_name: Any) -> tuple[Any, Any]:
    if capability is None or device_name is None:
        import torch

        capability = capability or torch.cuda.get_device_capability
        device_name = device_name or torch.cuda.get_device_name
    return capability, device_name


def _config(method: str, kind: str, dtype: str) -> tuple[Any, str]:
    import torch
    from transformers import BitsAndBytesConfig

    if method == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=getattr(torch, dtype),
        ), "4-bit NF4"
    if method == "bnb-int8":
        return BitsAndBytesConfig(load_in_8bit=True), "8-bit LLM.int8()"
    from torchao.quantization import (
        Float8WeightOnlyConfig,
        Int4WeightOnlyConfig,
        Int8WeightOnlyConfig,
        IntxWeightOnlyConfig,
        PerGroup,
    )
    from transformers import TorchAoConfig

    if method == "int8":
        ao = Int8WeightOnlyConfig()
    elif method == "fp8":
        ao = Float8WeightOnlyConfig()
    elif kind == "cpu":  # int4: no packed CPU layout in torchao 0.18
        ao = IntxWeightOnlyConfig(
            weight_dtype=getattr(torch, "int4"),  # noqa: B009 - torch's stubs lack int4
            granularity=PerGroup(INT4_GROUP),
        )
    else:
        ao = Int4WeightOnlyConfig(group_size=INT4_GROUP, int4_packing_format="tile_packed_to_4d")
    return TorchAoConfig(quant_type=ao), type(ao).__name__


# -- checkpoints that are quantized already -----------------------------------------------------
# The package each pre-quantized format needs, for the error when it is missing.
PRE_QUANTIZED_NEEDS = {
    "gptq": "gptqmodel and optimum",
    "awq": "autoawq",
    "compressed-tensors": "compressed-tensors",
    "torchao": "torchao",
    "bitsandbytes": "bitsandbytes",
    "fp8": "(a CUDA GPU with fp8)",
}


def pre_quantized(config: Any) -> dict[str, Any] | None:
    """The method of a checkpoint saved quantized (its config's ``quantization_config``), else None."""
    found = getattr(config, "quantization_config", None)
    if found is None and isinstance(config, dict):
        found = config.get("quantization_config")
    if not found:
        return None
    as_dict = found if isinstance(found, dict) else (found.to_dict() if hasattr(found, "to_dict") else vars(found))
    method = str(getattr(as_dict.get("quant_method"), "value", as_dict.get("quant_method")) or "unknown")
    bits = as_dict.get("bits") or as_dict.get("w_bit")
    if method == "bitsandbytes":
        bits = 4 if as_dict.get("load_in_4bit") else 8 if as_dict.get("load_in_8bit") else bits
    if method == "torchao" and as_dict.get("quant_type"):
        kind = as_dict["quant_type"]
        name = kind.get("default", kind).get("_type") if isinstance(kind, dict) else type(kind).__name__
        method_text = f"torchao {name}" if name else "torchao"
    else:
        method_text = method
    description = f"{method_text}{f' {bits}-bit' if bits else ''} (pre-quantized checkpoint)"
    return {"method": method, "bits": bits, "description": description, "pre_quantized": True}


def pre_quantized_hint(method: str) -> str:
    need = PRE_QUANTIZED_NEEDS.get(method)
    return f"; a {method} checkpoint needs {need}" if need else ""


# -- stored bytes -------------------------------------------------------------------------------
def plain_tensors(tensor: Any) -> Iterator[Any]:
    """The plain tensors that hold ``tensor``'s bytes: itself, or the inner tensors of a
    tensor subclass (torchao's quantized weights), and bitsandbytes' scales."""
    flatten = getattr(type(tensor), "__tensor_flatten__", None)
    if flatten is not None:
        names, _ = tensor.__tensor_flatten__()
        for name in names:
            yield from plain_tensors(getattr(tensor, name))
        return
    yield tensor
    yield from _bnb_extras(tensor)


def _bnb_extras(tensor: Any) -> Iterator[Any]:
    import torch

    scb = getattr(tensor, "SCB", None)  # LLM.int8() row scales
    if isinstance(scb, torch.Tensor):
        yield scb
    state = getattr(tensor, "quant_state", None)  # 4-bit: absmax, code, nested state
    seen: set[int] = set()
    while state is not None and id(state) not in seen:
        seen.add(id(state))
        for value in vars(state).values():
            if isinstance(value, torch.Tensor):
                yield value
        state = getattr(state, "state2", None)


def stored_bytes(tensors: Any) -> int:
    """Bytes the tensors occupy as stored (quantized data and scales), tied tensors once."""
    seen: set[tuple[str, int]] = set()
    total = 0
    for tensor in tensors:
        for plain in plain_tensors(tensor):
            if plain.device.type != "meta":
                key = (str(plain.device), plain.data_ptr())
                if key in seen:
                    continue
                seen.add(key)
            total += plain.numel() * plain.element_size()
    return total
