"""What a memory budget measures: the peak memory of the device the model runs on, weights
included (``cpu.py``, ``cuda.py``), through one meter per device.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..models.workers import cuda_indices
from .cpu import _PROC_STATUS, CpuMeter, PsutilCpuMeter
from .cuda import CudaMeter, MultiCudaMeter


def make_meter(
    device: str,
    shared: Mapping[int, int] | None = None,
) -> CpuMeter | PsutilCpuMeter | CudaMeter | MultiCudaMeter:
    """The meter of ``device``: ``cpu``, ``cuda:N``, or ``cuda:0+cuda:1`` for a spread model;
    ``shared``: how many xdist workers use each GPU (they split its free memory)."""
    shared = shared or {}
    if "+" in device:
        return MultiCudaMeter([CudaMeter(i, sharers=shared.get(i)) for i in cuda_indices(device)])
    if device.startswith("cuda"):
        (index,) = cuda_indices(device)
        return CudaMeter(index, sharers=shared.get(index))
    if os.path.exists(_PROC_STATUS):
        return CpuMeter()
    return PsutilCpuMeter()  # no /proc: macOS, Windows
