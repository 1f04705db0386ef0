"""Where a model runs: the device (xdist worker i on GPU i mod N), and whether it spreads over
every visible GPU with accelerate's device map (``--mmlu-device-map auto``, or ``fit``: only
when its weights do not fit one GPU).
"""

from __future__ import annotations

import os
from typing import Any

from .errors import ModelLoadError
from .workers import Workers, cuda_indices, sharing


def _gpu_range(count: int) -> str:
    return "cuda:0" if count == 1 else f"cuda:0-cuda:{count - 1}"


def resolve_device(setting: str, workers: Workers | None = None) -> str:
    """The device to run on: under pytest-xdist, ``auto``/``cuda`` put worker i on GPU i mod N
    (``workers``: this process's role, read from the environment by default)."""
    import torch

    if setting == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        if setting == "auto":
            return "cpu"
        raise ModelLoadError(f"--mmlu-device={setting}: CUDA is not available in this environment")
    count = torch.cuda.device_count()
    if setting in ("auto", "cuda"):
        return f"cuda:{(workers or Workers.of_this_process()).gpu(count)}"
    index = int(setting.split(":")[1])
    if index >= count:  # checked here: CUDA would fail later with a traceback
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hint = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
        raise ModelLoadError(
            f"--mmlu-device={setting}: this machine has {count} CUDA GPU{'s' if count != 1 else ''}"
            f"{hint}: use one of {_gpu_range(count)}, or 'cuda'"
        )
    return setting


# -- one GPU or many --------------------------------------------------------------------------------
# ``fit`` keeps a model on one GPU when its weights take at most this share of the GPU's free
# memory (this worker's share of it); the rest is for activations and the prefix cache.
FIT_SHARE = 0.8


# Of each GPU's free memory (this worker's share), accelerate's map may fill this much with weights.
SPREAD_SHARE = 0.9


def gpus_to_spread(
    setting: str, device: str, weights: int | None, cuda: Any = None, shared: dict[int, int] | None = None
) -> list[int] | None:
    """The GPUs a model spreads over with accelerate's device map, or None: it stays on ``device``.
    ``weights``: the estimated weight bytes (``fit`` spreads only what does not fit this worker's
    share of one GPU; ``shared``: how many workers use each GPU, ``workers.sharers``)."""
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
        if weights is None or weights <= FIT_SHARE * free / sharing(shared or {}, index):
            return None
    return list(range(count))


def spread_max_memory(gpus: list[int], cuda: Any, workers: Workers | None = None) -> dict[int, int]:
    """accelerate's per-GPU cap: this worker's share of each GPU's free memory (every worker
    spreads over every GPU), less headroom."""
    count = (workers or Workers.of_this_process()).count
    return {i: int(cuda.mem_get_info(i)[0] / count * SPREAD_SHARE) for i in gpus}
