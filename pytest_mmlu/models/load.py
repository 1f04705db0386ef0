"""Loading the model under test: once, in eval mode, safetensors only unless asked, as its load
plan says (``plan.py``), with its variant's quantization (``quantization.py``) and adapter
(``adapters.py``).
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..memory.allocator import cpu_allocator_for_loading
from .adapters import AdapterError, adapter_info, apply_adapter
from .quantization import INT4_GROUP, NF4_BLOCK, plain_tensors, pre_quantized_hint

if TYPE_CHECKING:
    from ..settings import Settings
from ..sources import looks_like_path
from ..text import first_line
from .devices import gpus_to_spread, spread_max_memory
from .errors import ModelLoadError, where_model
from .plan import LoadPlan, plan_load
from .quantization import stored_bytes
from .variants import Variant, session_variant
from .workers import Workers, sharers


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    name: str
    revision: str | None
    device: str  # "cuda:0+cuda:1" for a model spread over GPUs
    dtype: str  # the activations' dtype
    load_seconds: float
    weight_bytes: int  # as stored: quantized weights count their quantized bytes
    commit: str | None  # hub commit hash when loaded from the hub
    variant: Variant = field(default_factory=Variant)
    quantization: dict[str, Any] | None = None  # method, library, description, pre_quantized
    adapter: dict[str, Any] | None = None  # path, type, base_model, r, merged
    shared: dict[int, int] = field(default_factory=dict)  # xdist workers using each of its GPUs

    def describe(self) -> dict[str, Any]:
        """The report's ``model`` entry (and each variant's)."""
        return {
            "name": self.name,
            "revision": self.revision,
            "commit": self.commit,
            "dtype": self.dtype,
            "device": self.device,
            "weight_bytes": self.weight_bytes,
            "load_seconds": round(self.load_seconds, 3),
            "variant": self.variant.label,
            "quantization": self.quantization,
            "adapter": self.adapter,
        }


# Bytes per weight of a quantized linear layer, scales included: int4 keeps a scale and a zero
# point per group of 32 (on CPU each int4 value takes a byte: no packed layout), NF4 an 8-bit
# absmax per 64; the per-row scales of the 8-bit methods are negligible.
BYTES_PER_WEIGHT = {"int8": 1.0, "fp8": 1.0, "bnb-int8": 1.0, "nf4": 0.5 + 1 / NF4_BLOCK, "int4": 0.5 + 8 / INT4_GROUP}


def estimate_weight_bytes(
    config: Any, dtype: str, quantization: str = "none", trust_remote_code: bool = False, device: str = "cuda"
) -> int:
    """The weights' bytes before loading: the model built on the meta device (no memory),
    linear layers at the method's bytes per weight, the rest (embeddings, norms, the output
    head, which the methods leave alone) in ``dtype``."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    per_weight = BYTES_PER_WEIGHT.get(quantization)
    if quantization == "int4" and not device.startswith("cuda"):
        per_weight = 1.0 + 8 / INT4_GROUP
    dtype_bytes = getattr(torch, dtype).itemsize
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    head = model.get_output_embeddings()
    seen: set[int] = set()
    total = 0.0
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:  # tied weights count once
                continue
            seen.add(id(param))
            quantized = (
                per_weight is not None
                and isinstance(module, torch.nn.Linear)
                and module is not head
                and name == "weight"
            )
            total += param.numel() * (per_weight if quantized else dtype_bytes)
    return int(total)


# -- what was loaded --------------------------------------------------------------------------------
def weight_bytes(model: Any) -> int:
    """Stored bytes of parameters and buffers: quantized data and scales for quantized layers."""
    return stored_bytes([*model.parameters(), *model.buffers()])


def _devices_of(model: Any) -> list[str]:
    placed = getattr(model, "hf_device_map", None) or {}
    return sorted({str(d) for d in placed.values()}, key=str)


def _share_cpu_threads(workers: Workers) -> None:
    """Under pytest-xdist each worker takes its share of the cores, or they thrash."""
    import torch

    if workers.count > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers.count))


def load_model(
    settings: Settings,
    variant: Variant | None = None,
    load_plan: LoadPlan | None = None,
) -> LoadedModel:
    """Load the model and tokenizer the settings name, as ``variant`` (default: the one the
    settings name) following ``load_plan`` (default: made now); raise ModelLoadError with one
    clear line."""
    variant = session_variant(settings) if variant is None else variant
    load_plan = plan_load(settings, variant) if load_plan is None else load_plan
    if load_plan.device.startswith("cuda"):
        return _load_model(settings, variant, load_plan)
    with cpu_allocator_for_loading():
        return _load_model(settings, variant, load_plan)


def _load_model(settings: Settings, variant: Variant, load_plan: LoadPlan) -> LoadedModel:
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()  # our own progress line is enough

    name = settings.model
    assert name, "load_model needs settings.model"
    device, dtype, saved_as = load_plan.device, load_plan.dtype, load_plan.saved_as
    local = looks_like_path(name)
    where = where_model(name)
    common: dict[str, Any] = {"revision": settings.revision, "trust_remote_code": settings.trust_remote_code}
    on_cuda = device.startswith("cuda")

    def failed(exc: BaseException, hint: str = "") -> ModelLoadError:
        reason = first_line(exc)
        if not hint and not settings.allow_pickle and "safetensors" in reason.lower():
            hint = "; weights are loaded from safetensors only: pass --mmlu-allow-pickle to load pickle files"
        elif not hint and not local:
            hint = "; with no network, pass --mmlu-model=/path/to/a/local/folder"
        return ModelLoadError(f"cannot load {where}: {reason}{hint}")

    start = time.perf_counter()
    try:
        config = AutoConfig.from_pretrained(name, **common)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError/ValueError/EnvironmentError
        raise failed(exc) from None
    kwargs: dict[str, Any] = {}
    quantization = saved_as
    if load_plan.quantization is not None:
        kwargs["quantization_config"] = load_plan.quantization.config
        quantization = load_plan.quantization.to_dict()
    gpus = None
    if on_cuda:
        estimate = None
        if settings.device_map == "fit" and torch.cuda.device_count() > 1:
            estimate = estimate_weight_bytes(config, dtype, variant.quantization, settings.trust_remote_code)
        gpus = gpus_to_spread(settings.device_map, device, estimate, shared=load_plan.shared)
        if gpus is None:
            kwargs["device_map"] = device
        else:
            kwargs["device_map"] = "auto"
            kwargs["max_memory"] = spread_max_memory(gpus, torch.cuda, load_plan.workers)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **common)
        model = AutoModelForCausalLM.from_pretrained(
            name,
            dtype=getattr(torch, dtype),
            use_safetensors=None if settings.allow_pickle else True,
            **kwargs,
            **common,
        )
    except ImportError as exc:  # a pre-quantized format whose library is missing
        raise failed(exc, pre_quantized_hint(saved_as["method"]) if saved_as else "") from None
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError/ValueError/EnvironmentError
        raise failed(exc) from None
    if gpus is not None:
        placed = _devices_of(model)
        if any(not d.isdigit() for d in placed):  # accelerate put layers on cpu or disk
            raise ModelLoadError(
                f"cannot load {where}: it does not fit on the {len(gpus)} GPUs (placed on "
                f"{', '.join(placed)}): give them more free memory, or quantize it "
                f"(--mmlu-quantization)"
            )
        device = "+".join(f"cuda:{d}" for d in sorted(placed, key=int))
    adapter = None
    if variant.adapter is not None:
        try:
            adapter = {**adapter_info(variant.adapter), "merged": variant.merge_adapter}
            model = apply_adapter(model, variant.adapter, variant.merge_adapter)
        except AdapterError as exc:
            raise ModelLoadError(str(exc)) from None
    commit = None if local else getattr(model.config, "_commit_hash", None)
    if not on_cuda:
        model.to(device)  # type: ignore[arg-type]  # transformers' wrapper types the device away
        if "quantization_config" in kwargs:
            _copy_out_of_checkpoint(model)
        _share_cpu_threads(load_plan.workers)
        # safetensors weights are memory-mapped and count as resident only once
        # touched; touch them now so the memory baseline of a budget includes them.
        with torch.inference_mode():
            for tensor in model.parameters():
                for plain in _plain(tensor):
                    # fp8 has no sum on CPU: its bytes read as uint8 touch the same pages
                    (plain.view(torch.uint8) if plain.element_size() == 1 else plain).sum()
    model.eval()
    model.requires_grad_(False)
    seconds = time.perf_counter() - start
    label = str(Path(name).name) if local else name
    shared = load_plan.shared if gpus is None else sharers(settings.device, device, len(gpus), load_plan.workers)
    return LoadedModel(
        model,
        tokenizer,
        label,
        settings.revision,
        device,
        dtype,
        seconds,
        weight_bytes(model),
        commit,
        variant,
        quantization,
        adapter,
        shared,
    )


def _copy_out_of_checkpoint(model: Any) -> None:
    """Give a model quantized at load its own memory.  Its unquantized tensors (embeddings,
    norms) are views of the memory-mapped checkpoint, which keeps the whole file mapped, and
    resident every fp32 weight that was read once to be quantized: SmolLM2 int8 measured
    1.13 GiB peak against fp32's 1.02 GiB.  Copied, the mapping goes, and those pages with it."""

    import torch

    for tensor in [*model.parameters(), *model.buffers()]:
        if type(tensor) in (torch.Tensor, torch.nn.Parameter):
            tensor.data = tensor.data.clone()
    gc.collect()


def _plain(tensor: Any) -> Any:
    return plain_tensors(tensor)
