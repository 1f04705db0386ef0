"""Loading the model under test: once, in eval mode, safetensors only unless asked.

Where it runs: ``resolve_device`` picks the device (xdist worker i on GPU i mod N), and
``gpus_to_spread`` whether a model spreads over every visible GPU with accelerate's device
map (``--mmlu-device-map auto``, or ``fit``: only when its weights do not fit one GPU).
In what dtype: ``resolve_dtype`` (``auto`` as lm-eval means it, never an emulated type).
What is loaded: the variant's quantization (``quantization.py``) and adapter (``adapters.py``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .memory import (
    cpu_allocator_for_loading,
    first_line,
    gpu_sharers,
    set_gpu_sharers,
    xdist_worker,
)
from .quantization import cuda_indices, pre_quantized, stored_bytes
from .settings import Settings, looks_like_path
from .variants import Variant, session_variant


class ModelLoadError(Exception):
    """The model could not be loaded; the message names it and says what to do."""


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

    def describe(self) -> dict[str, Any]:
        """The report's ``model`` entry (and each variant's)."""
        return {"name": self.name, "revision": self.revision, "commit": self.commit,
                "dtype": self.dtype, "device": self.device, "weight_bytes": self.weight_bytes,
                "load_seconds": round(self.load_seconds, 3), "variant": self.variant.label,
                "quantization": self.quantization, "adapter": self.adapter}


def _gpu_range(count: int) -> str:
    return "cuda:0" if count == 1 else f"cuda:0-cuda:{count - 1}"


def resolve_device(setting: str) -> str:
    """The device to run on.  Under pytest-xdist, ``auto``/``cuda`` put worker i on GPU i mod N,
    and the number of workers on each GPU is noted for the meter (they split its free memory)."""
    import torch

    if setting == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        if setting == "auto":
            return "cpu"
        raise ModelLoadError(f"--mmlu-device={setting}: CUDA is not available in this environment")
    count = torch.cuda.device_count()
    worker, workers = xdist_worker()
    if setting in ("auto", "cuda"):
        index = worker % count
        set_gpu_sharers(index, len(range(index, workers, count)))
        return f"cuda:{index}"
    index = int(setting.split(":")[1])
    if index >= count:  # checked here: CUDA would fail later with a traceback
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hint = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
        raise ModelLoadError(
            f"--mmlu-device={setting}: this machine has {count} CUDA GPU{'s' if count != 1 else ''}"
            f"{hint}: use one of {_gpu_range(count)}, or 'cuda'")
    set_gpu_sharers(index, workers)  # every worker was given this same GPU
    return setting


# -- dtype ----------------------------------------------------------------------------------------
# The compute capability from which a GPU runs each half type in hardware: bfloat16 from
# Ampere (8.0); below it (T4 7.5, V100 7.0) torch emulates bfloat16 through float32, slowly,
# and torch.cuda.is_bf16_supported() still says True.  float16 from Pascal (6.0).
NATIVE_FROM = {"bfloat16": (8, 0), "float16": (6, 0)}


def checkpoint_config(model: str | None, revision: str | None = None) -> dict[str, Any] | None:
    """The checkpoint's config.json, without loading anything else and without the network
    (a hub model's config from the local hub cache); None where it cannot be read."""
    if not model:
        return None
    try:
        return _read_config(model, revision, download=False)
    except Exception:  # noqa: BLE001 - OSError, ValueError, the hub's own errors: unreadable
        return None


def _read_config(model: str, revision: str | None, download: bool) -> dict[str, Any]:
    """config.json of a local folder, or of a hub model from the local hub cache (``download``:
    else from the hub); raises what reading it raised."""
    if looks_like_path(model):
        return json.loads((Path(model) / "config.json").read_text())
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    path = try_to_load_from_cache(model, "config.json", revision=revision)
    if not isinstance(path, str):
        if not download:
            raise FileNotFoundError(f"{model}: config.json is not in the local hub cache")
        path = hf_hub_download(model, "config.json", revision=revision)
    return json.loads(Path(path).read_text())


def where_model(name: str) -> str:
    """How messages name the model: a folder, or a hub id."""
    return f"model folder {name}" if looks_like_path(name) else f"model {name!r} from the Hugging Face hub"


def checkpoint_dtype(config: Any) -> str | None:
    """The dtype the checkpoint was saved in ('bfloat16'...), from a config object or dict."""
    get = config.get if isinstance(config, dict) else (lambda name: getattr(config, name, None))
    value = get("dtype") or get("torch_dtype")
    if value is None:
        return None
    return str(value).removeprefix("torch.")


def resolve_dtype(setting: str, device: str, model: str | None = None, revision: str | None = None,
                  *, saved: str | None = None, cuda: Any = None) -> str:
    """``auto`` as lm-eval means it where it can: the checkpoint's dtype (``saved``, else read
    from ``model``'s config) when it is a half type that every GPU of ``device`` runs natively;
    float32 otherwise (CPU, a float32 checkpoint, a GPU that would emulate it).  ``cuda`` is
    torch.cuda (tests pass a fake)."""
    if setting != "auto":
        return setting
    if not device.startswith("cuda"):
        return "float32"
    if saved is None:
        saved = checkpoint_dtype(checkpoint_config(model, revision) or {})
    if saved not in NATIVE_FROM:
        return "float32"
    if cuda is None:
        import torch

        cuda = torch.cuda
    # The chosen GPUs' capability, not the current device's (torch's default for no index).
    native = all(tuple(cuda.get_device_capability(i)) >= NATIVE_FROM[saved] for i in cuda_indices(device))
    return saved if native else "float32"


# -- one GPU or many --------------------------------------------------------------------------------
# ``fit`` keeps a model on one GPU when its weights take at most this share of the GPU's free
# memory (this worker's share of it); the rest is for activations and the prefix cache.
FIT_SHARE = 0.8
# Of each GPU's free memory (this worker's share), accelerate's map may fill this much with weights.
SPREAD_SHARE = 0.9


def gpus_to_spread(setting: str, device: str, weights: int | None, cuda: Any = None) -> list[int] | None:
    """The GPUs a model spreads over with accelerate's device map, or None: it stays on ``device``.
    ``weights``: the estimated weight bytes (``fit`` spreads only what does not fit one GPU)."""
    if not device.startswith("cuda") or setting == "single":
        return None
    if cuda is None:
        import torch

        cuda = torch.cuda
    count = cuda.device_count()
    if count < 2:
        return None
    if setting == "fit":
        index = cuda_indices(device)[0]
        free, _total = cuda.mem_get_info(index)
        if weights is None or weights <= FIT_SHARE * free / gpu_sharers(index):
            return None
    _, workers = xdist_worker()
    for index in range(count):
        set_gpu_sharers(index, workers)  # every worker spreads over every GPU
    return list(range(count))


def spread_max_memory(gpus: list[int], cuda: Any) -> dict[int, int]:
    """accelerate's per-GPU cap: this worker's share of each GPU's free memory, less headroom."""
    return {i: int(cuda.mem_get_info(i)[0] / gpu_sharers(i) * SPREAD_SHARE) for i in gpus}


@dataclass(frozen=True)
class LoadPlan:
    """Where and in what dtype a model loads, decided once per variant before loading: the
    loader follows it, and the evaluation's identity (the result cache's key) is made from it,
    so that what is identified is what is loaded."""

    device: str  # resolve_device's answer; a model spread over GPUs starts on it
    dtype: str  # the activations' dtype, after the quantization method's own rule
    quantization: Any = None  # quantization.QuantPlan, or None
    saved_as: dict[str, Any] | None = None  # a checkpoint saved quantized (pre_quantized)


def plan_load(settings: Settings, variant: Variant | None = None) -> LoadPlan:
    """The load plan of the settings' model as ``variant``; ModelLoadError with one line."""
    from .quantization import QuantizationUnavailable, plan

    variant = session_variant(settings) if variant is None else variant
    device = resolve_device(settings.device)
    name = str(settings.model)
    try:
        config = _read_config(name, settings.revision, download=True)
    except Exception as exc:  # noqa: BLE001 - a missing folder, offline, no such repository
        hint = "" if looks_like_path(name) else "; with no network, pass --mmlu-model=/path/to/a/local/folder"
        raise ModelLoadError(f"cannot load {where_model(name)}: {first_line(exc)}{hint}") from None
    saved_as = pre_quantized(config)
    dtype = resolve_dtype(settings.dtype, device, saved=checkpoint_dtype(config))
    quant = None
    if variant.quantization != "none":
        if saved_as is not None:
            raise ModelLoadError(
                f"--mmlu-quantization={variant.quantization}: {where_model(name)} is already quantized "
                f"({saved_as['description']}); it loads as it is with --mmlu-quantization none")
        try:
            quant = plan(variant.quantization, device, dtype, settings.dtype)
        except QuantizationUnavailable as exc:
            raise ModelLoadError(str(exc)) from None
        dtype = quant.dtype
    return LoadPlan(device, dtype, quant, saved_as)


# Bytes per weight of a quantized linear layer, scales included: int4 keeps a scale and a zero
# point per group of 32 (on CPU each int4 value takes a byte: no packed layout), NF4 an 8-bit
# absmax per 64; the per-row scales of the 8-bit methods are negligible.
BYTES_PER_WEIGHT = {"int8": 1.0, "fp8": 1.0, "bnb-int8": 1.0, "nf4": 0.5 + 1 / 64,
                    "int4": 0.5 + 8 / 32}


def estimate_weight_bytes(config: Any, dtype: str, quantization: str = "none",
                          trust_remote_code: bool = False, device: str = "cuda") -> int:
    """The weights' bytes before loading: the model built on the meta device (no memory),
    linear layers at the method's bytes per weight, the rest (embeddings, norms, the output
    head, which the methods leave alone) in ``dtype``."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    per_weight = BYTES_PER_WEIGHT.get(quantization)
    if quantization == "int4" and not device.startswith("cuda"):
        per_weight = 1.0 + 8 / 32
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
            quantized = (per_weight is not None and isinstance(module, torch.nn.Linear)
                         and module is not head and name == "weight")
            total += param.numel() * (per_weight if quantized else dtype_bytes)
    return int(total)


# -- what was loaded --------------------------------------------------------------------------------
def weight_bytes(model: Any) -> int:
    """Stored bytes of parameters and buffers: quantized data and scales for quantized layers."""
    return stored_bytes([*model.parameters(), *model.buffers()])


def _devices_of(model: Any) -> list[str]:
    placed = getattr(model, "hf_device_map", None) or {}
    return sorted({str(d) for d in placed.values()}, key=str)


def _share_cpu_threads() -> None:
    """Under pytest-xdist each worker takes its share of the cores, or they thrash."""
    import torch

    _, workers = xdist_worker()
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def load_model(settings: Settings, variant: Variant | None = None, load_plan: LoadPlan | None = None,
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

    from .adapters import AdapterError, adapter_info, apply_adapter
    from .quantization import pre_quantized_hint

    transformers.utils.logging.disable_progress_bar()  # our own progress line is enough

    name = settings.model
    assert name, "load_model needs settings.model"
    device, dtype, saved_as = load_plan.device, load_plan.dtype, load_plan.saved_as
    local = looks_like_path(name)
    where = where_model(name)
    common: dict[str, Any] = {"revision": settings.revision,
                              "trust_remote_code": settings.trust_remote_code}
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
        gpus = gpus_to_spread(settings.device_map, device, estimate)
        if gpus is None:
            kwargs["device_map"] = device
        else:
            kwargs["device_map"] = "auto"
            kwargs["max_memory"] = spread_max_memory(gpus, torch.cuda)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **common)
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=getattr(torch, dtype), use_safetensors=None if settings.allow_pickle else True,
            **kwargs, **common)
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
                f"(--mmlu-quantization)")
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
        model.to(device)
        if "quantization_config" in kwargs:
            _copy_out_of_checkpoint(model)
        _share_cpu_threads()
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
    return LoadedModel(model, tokenizer, label, settings.revision, device, dtype, seconds,
                       weight_bytes(model), commit, variant, quantization, adapter)


def _copy_out_of_checkpoint(model: Any) -> None:
    """Give a model quantized at load its own memory.  Its unquantized tensors (embeddings,
    norms) are views of the memory-mapped checkpoint, which keeps the whole file mapped, and
    resident every fp32 weight that was read once to be quantized: SmolLM2 int8 measured
    1.13 GiB peak against fp32's 1.02 GiB.  Copied, the mapping goes, and those pages with it."""
    import gc

    import torch

    for tensor in [*model.parameters(), *model.buffers()]:
        if type(tensor) in (torch.Tensor, torch.nn.Parameter):
            tensor.data = tensor.data.clone()
    gc.collect()


def _plain(tensor: Any) -> Any:
    from .quantization import plain_tensors

    return plain_tensors(tensor)


# -- the header ---------------------------------------------------------------------------------------
def variant_lines(settings: Settings) -> list[str]:
    """Header lines for what the session loads beyond the plain model: a quantization, a
    checkpoint that is quantized already, an adapter, a device map."""
    lines = []
    variant = session_variant(settings)
    saved_as = pre_quantized(checkpoint_config(settings.model, settings.revision) or {})
    if saved_as is not None:
        lines.append(f"mmlu: quantization {saved_as['description']}")
    elif variant.quantization != "none":
        lines.append(f"mmlu: quantization {variant.quantization} (--mmlu-quantization)")
    if variant.adapter is not None:
        merged = ", merged" if variant.merge_adapter else ""
        lines.append(f"mmlu: adapter {variant.adapter}{merged}")
    if settings.device_map != "fit":
        lines.append(f"mmlu: device map {settings.device_map}")
    return lines
