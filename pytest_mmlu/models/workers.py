"""The xdist role of this process, and how many workers share each GPU.
"""

from __future__ import annotations

import os


def xdist_worker() -> tuple[int, int]:
    """(this worker's number, how many workers); (0, 1) outside pytest-xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    worker = int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else 0
    return worker, max(1, workers)


# How many xdist workers of this run use each GPU, as ``loading.resolve_device`` assigned
# them; the meter made later (by whoever evaluates) divides the free memory by it.
_gpu_sharers: dict[int, int] = {}


def set_gpu_sharers(index: int, count: int) -> None:
    _gpu_sharers[index] = max(1, count)


def gpu_sharers(index: int) -> int:
    return _gpu_sharers.get(index, 1)
