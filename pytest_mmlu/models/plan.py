"""How a model will load, decided once per variant before loading: its dtype (``auto`` as lm-eval
means it, never an emulated type), its quantization plan, from the checkpoint's config.

The loader follows the plan, and an evaluation's identity is made from it, so that what is
identified is what is loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .quantization import QuantizationUnavailable, plan
from .workers import Workers, sharers

if TYPE_CHECKING:
    from ..settings import Settings
from ..sources import looks_like_path
from ..text import first_line
from .devices import resolve_device
from .errors import ModelLoadError, where_model
from .quantization import pre_quantized
from .variants import Variant, session_variant
from .workers import cuda_indices

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


def checkpoint_dtype(config: Any) -> str | None:
    """The dtype the checkpoint was saved in ('bfloat16'...), from a config object or dict."""
    get = config.get if isinstance(config, dict) else (lambda name: getattr(config, name, None))
    value = get("dtype") or get("torch_dtype")
    if value is None:
        return None
    return str(value).removeprefix("torch.")


def resolve_dtype(
    setting: str,
    device: str,
    model: str | None = None,
    revision: str | None = None,
    *,
    saved: str | None = None,
    cuda: Any = None,
) -> str:
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


@dataclass(frozen=True)
class LoadPlan:
    """Where and in what dtype a model loads, decided once per variant before loading: the
    loader follows it, and the evaluation's identity (the result cache's key) is made from it,
    so that what is identified is what is loaded."""

    device: str  # resolve_device's answer; a model spread over GPUs starts on it
    dtype: str  # the activations' dtype, after the quantization method's own rule
    quantization: Any = None  # quantization.QuantPlan, or None
    saved_as: dict[str, Any] | None = None  # a checkpoint saved quantized (pre_quantized)
    workers: Workers = field(default_factory=Workers)  # this process's xdist role
    shared: dict[int, int] = field(default_factory=dict)  # workers using each GPU of ``device``


def plan_load(settings: Settings, variant: Variant | None = None) -> LoadPlan:
    """The load plan of the settings' model as ``variant``; ModelLoadError with one line."""
    variant = session_variant(settings) if variant is None else variant
    workers = Workers.of_this_process()
    device = resolve_device(settings.device, workers)
    shared = sharers(settings.device, device, _gpu_count(device), workers)
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
                f"({saved_as['description']}); it loads as it is with --mmlu-quantization none"
            )
        try:
            quant = plan(variant.quantization, device, dtype, settings.dtype)
        except QuantizationUnavailable as exc:
            raise ModelLoadError(str(exc)) from None
        dtype = quant.dtype
    return LoadPlan(device, dtype, quant, saved_as, workers, shared)


def _gpu_count(device: str) -> int:
    if not device.startswith("cuda"):
        return 0
    import torch

    return torch.cuda.device_count()
