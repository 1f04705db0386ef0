"""Where a model runs: the device (xdist worker i on GPU i mod N), and whether it spreads over
every visible GPU with accelerate's device map (``--mmlu-device-map auto``, or ``fit``: only
when its weights do not fit one GPU).
"""

from __future__ import annotations

import os
from typing import Any

from .errors import ModelLoadError
from .quantization import cuda_indices
from .workers import gpu_sharers, set_gpu_sharers, xdist_worker


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
