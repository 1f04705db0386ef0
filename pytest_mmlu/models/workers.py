"""The xdist role of this process, decided once, and how many workers share each GPU.

Under pytest-xdist with ``--mmlu-device auto`` or ``cuda``, worker i runs on GPU i mod N; with
``cuda:N`` every worker runs on GPU N; a model spread over every GPU (accelerate's device map)
has every worker on every GPU. Workers on one GPU split its free memory: the meter and the
planner divide by how many there are (``sharers``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Workers:
    """This process is worker ``index`` of ``count`` (0 of 1 outside pytest-xdist)."""

    index: int = 0
    count: int = 1

    @classmethod
    def of_this_process(cls) -> Workers:
        name = os.environ.get("PYTEST_XDIST_WORKER", "")
        count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
        index = int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else 0
        return cls(index, max(1, count))

    def gpu(self, gpus: int) -> int:
        """The GPU this worker runs on when the workers go round the ``gpus`` GPUs."""
        return self.index % gpus


def cuda_indices(device: str) -> list[int]:
    """``cuda:0`` -> [0]; ``cuda:0+cuda:1`` (a model spread over GPUs) -> [0, 1]; ``cuda`` -> [0]."""
    return [int(part.split(":")[1]) if ":" in part else 0 for part in device.split("+")]


def sharers(setting: str, device: str, gpus: int, workers: Workers) -> dict[int, int]:
    """How many workers of this run use each GPU of ``device`` (``cuda:1``, or ``cuda:0+cuda:1``
    for a spread model) under the ``--mmlu-device`` ``setting``; nothing for the CPU."""
    if not device.startswith("cuda"):
        return {}
    indices = cuda_indices(device)
    if len(indices) > 1:  # every worker spreads over every GPU
        return {i: workers.count for i in indices}
    (index,) = indices
    if setting in ("auto", "cuda"):  # the workers go round the GPUs
        return {index: len(range(index, workers.count, gpus))}
    return {index: workers.count}  # every worker was given this same GPU


def sharing(of: Mapping[int, int], index: int) -> int:
    return max(1, of.get(index, 1))
