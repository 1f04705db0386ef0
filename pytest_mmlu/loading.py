"""Loading the model under test: once, in eval mode, safetensors only unless asked."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .memory import configure_cpu_allocator, first_line, set_gpu_sharers, xdist_worker
from .settings import Settings, looks_like_path


class ModelLoadError(Exception):
    """The model could not be loaded; the message names it and says what to do."""


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    name: str
    revision: str | None
    device: str
    dtype: str
    load_seconds: float
    weight_bytes: int
    commit: str | None  # hub commit hash when loaded from the hub


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


def resolve_dtype(setting: str, device: str) -> str:
    import torch

    if setting != "auto":
        return setting
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float32"


def weight_bytes(model: Any) -> int:
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.data_ptr() in seen:  # tied weights count once
            continue
        seen.add(tensor.data_ptr())
        total += tensor.numel() * tensor.element_size()
    return total


def _share_cpu_threads() -> None:
    """Under pytest-xdist each worker takes its share of the cores, or they thrash."""
    import torch

    _, workers = xdist_worker()
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def load_model(settings: Settings) -> LoadedModel:
    """Load model and tokenizer named by the settings; raise ModelLoadError with one clear line."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()  # our own progress line is enough

    name = settings.model
    assert name, "load_model needs settings.model"
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    local = looks_like_path(name)
    where = f"model folder {name}" if local else f"model {name!r} from the Hugging Face hub"
    common: dict[str, Any] = {"revision": settings.revision,
                              "trust_remote_code": settings.trust_remote_code}
    if not device.startswith("cuda"):
        configure_cpu_allocator()
    start = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **common)
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=getattr(torch, dtype), use_safetensors=None if settings.allow_pickle else True,
            device_map=device if device.startswith("cuda") else None, **common)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError/ValueError/EnvironmentError
        reason = first_line(exc)
        if not settings.allow_pickle and "safetensors" in reason.lower():
            hint = "; weights are loaded from safetensors only: pass --mmlu-allow-pickle to load pickle files"
        elif not local:
            hint = "; with no network, pass --mmlu-model=/path/to/a/local/folder"
        else:
            hint = ""
        raise ModelLoadError(f"cannot load {where}: {reason}{hint}") from None
    commit = None if local else getattr(model.config, "_commit_hash", None)
    if not device.startswith("cuda"):
        model.to(device)
        _share_cpu_threads()
        # safetensors weights are memory-mapped and count as resident only once
        # touched; touch them now so the memory baseline of a budget includes them.
        with torch.inference_mode():
            for tensor in model.parameters():
                tensor.sum()
    model.eval()
    model.requires_grad_(False)
    seconds = time.perf_counter() - start
    label = str(Path(name).name) if local else name
    return LoadedModel(model, tokenizer, label, settings.revision, device, dtype, seconds,
                       weight_bytes(model), commit)
