"""A GPU's meter: torch's peak *reserved* memory plus what this process uses beyond torch's
reservation (CUDA context, cuBLAS workspaces, other libraries): NVML's per-process figure;
where NVML does not list this process (PID namespaces in containers, MIG without privileges),
the growth of the device's used memory (``mem_get_info``) beyond torch's since the meter
started; torch's figures alone where neither is sound. ``describe()`` says which. A model
spread over several GPUs has every GPU it uses measured, and the budget bounds each of them.
"""

from __future__ import annotations

import os
from typing import Any

from ..sizes import format_gib
from ..text import first_line


def _uuid_candidates(uuid: str) -> list[str]:
    """NVML names a whole GPU 'GPU-<uuid>' and a MIG instance 'MIG-<uuid>'; torch gives the bare uuid."""
    return [uuid] if uuid.startswith(("GPU-", "MIG-")) else ["GPU-" + uuid, "MIG-" + uuid]


def _is_mig_handle(nvml: Any, handle: Any) -> bool:
    try:
        return bool(nvml.nvmlDeviceIsMigDeviceHandle(handle))
    except Exception:  # noqa: BLE001 - old NVML without MIG: not a MIG handle
        return False


class CudaMeter:
    """torch's reserved memory plus what this process uses outside it on one GPU.

    What is outside torch is measured by ``method``:
    - ``nvml``: NVML's figure for this process (matched by PID);
    - ``delta``: NVML does not list this process (a container's PID namespace) or gives
      no per-process memory (MIG without privileges): the device's used memory
      (``mem_get_info``) grown beyond torch's reservation since the meter started;
    - ``torch``: torch's figures only (no NVML; or other xdist workers share the GPU,
      whose growth a device-wide delta would count as ours).
    ``nvml`` is the ``pynvml`` module (nvidia-ml-py); tests pass a fake.
    """

    def __init__(
        self, index: int, nvml: Any | None = None, torch_cuda: Any | None = None, sharers: int | None = None
    ) -> None:
        if torch_cuda is None:
            import torch

            torch_cuda = torch.cuda
        self.cuda = torch_cuda
        self.index = index
        self.device = f"cuda:{index}"
        self.sharers = max(1, sharers or 1)
        self.method, self._why = "torch", "NVML unavailable: pynvml is not installed"
        self._nvml: Any = None
        self._handle: Any = None
        self._mig = False
        self._start: tuple[int, int] = (0, 0)  # (device used, torch reserved) when ``delta`` began
        if nvml is None:
            try:
                import pynvml

                nvml = pynvml
            except ImportError:
                nvml = None
        if nvml is not None:
            self._open_nvml(nvml)
        self._outside_peak = 0

    def _open_nvml(self, nvml: Any) -> None:
        try:
            nvml.nvmlInit()
            uuid = str(self.cuda.get_device_properties(self.index).uuid)
        except Exception as exc:  # noqa: BLE001 - NVML missing or unusable: torch figures only
            self._why = f"NVML unavailable: {first_line(exc)}"
            return
        for candidate in _uuid_candidates(uuid):
            try:
                handle = nvml.nvmlDeviceGetHandleByUUID(candidate)
            except Exception:  # noqa: BLE001 - not this kind of device
                continue
            self._nvml, self._handle, self.method = nvml, handle, "nvml"
            self._mig = candidate.startswith("MIG-") or _is_mig_handle(nvml, handle)
            return
        self._why = f"NVML has no device {uuid} (MIG instance?)"

    def _device_used(self) -> int:
        free, total = self.cuda.mem_get_info(self.index)
        return total - free

    def _nvml_used(self) -> tuple[int | None, str]:
        """NVML's bytes for this process, or None and why NVML cannot say."""
        try:
            procs = self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle)
        except Exception as exc:  # noqa: BLE001 - e.g. not supported on this device
            return None, f"NVML cannot list processes: {first_line(exc)}"
        mine = [p for p in procs if p.pid == os.getpid()]
        if not mine:
            return None, "this process is not in NVML's process list (PID namespace?)"
        if any(p.usedGpuMemory is None for p in mine):
            return None, "NVML reports no per-process memory"
        return sum(p.usedGpuMemory for p in mine), ""

    def _fall_back(self, reason: str, reserved: int) -> None:
        if self.sharers > 1:
            self.method = "torch"
            self._why = f"{reason}; {self.sharers} workers share this GPU, so device-wide figures would count theirs"
        else:
            self.method, self._why = "delta", reason
            self._start = (self._device_used(), reserved)

    def _outside_torch(self) -> int:
        """Bytes this process uses on the device that torch's allocator did not reserve."""
        reserved = self.cuda.memory_reserved(self.index)
        if self.method == "nvml":
            used, reason = self._nvml_used()
            if used is not None:
                return max(0, used - reserved)
            if reserved == 0:
                return 0  # no CUDA context yet: NVML cannot list us, and there is nothing to count
            self._fall_back(reason, reserved)
        if self.method == "delta":
            start_used, start_reserved = self._start
            return max(0, (self._device_used() - start_used) - (reserved - start_reserved))
        return 0

    def reset_peak(self) -> None:
        self.cuda.synchronize(self.index)
        self.cuda.reset_peak_memory_stats(self.index)
        self._outside_peak = self._outside_torch()

    def current(self) -> int:
        return self.cuda.memory_reserved(self.index) + self._outside_torch()

    def peak(self) -> int:
        self.cuda.synchronize(self.index)
        self._outside_peak = max(self._outside_peak, self._outside_torch())
        return self.cuda.max_memory_reserved(self.index) + self._outside_peak

    def available(self) -> int:
        """This process's share of the device's free memory: xdist workers on one GPU split it."""
        free, _total = self.cuda.mem_get_info(self.index)
        return free // self.sharers

    def _name_and_total(self) -> tuple[str, int]:
        if self._handle is not None:
            try:
                name = self._nvml.nvmlDeviceGetName(self._handle)
                total = self._nvml.nvmlDeviceGetMemoryInfo(self._handle).total
                return (name.decode() if isinstance(name, bytes) else name), int(total)
            except Exception:  # noqa: BLE001 - fall through to torch's view
                pass
        props = self.cuda.get_device_properties(self.index)
        return props.name, props.total_memory

    def method_text(self) -> str:
        mig = " (MIG instance)" if self._mig else ""
        if self.method == "nvml":
            return f"torch + NVML per process{mig}"
        if self.method == "delta":
            return f"torch + mem_get_info deltas since start{mig}: {self._why}"
        return f"torch only{mig}: {self._why}"

    def describe(self) -> str:
        name, total = self._name_and_total()
        return f"{self.device} ({name}, {format_gib(total)}; {self.method_text()})"


class MultiCudaMeter:
    """Every GPU a model spread over (accelerate's device map): a budget bounds each of them.

    ``peak()`` is the highest device's peak, and ``peak_device`` names that device; ``current()``
    the highest device's figure; ``available()`` the least free memory among them.  The planner
    sizes batches for the tightest device, and its calibration from measured peaks absorbs
    how unevenly a batch lands on them (the logits on the last GPU, the layers on each).
    """

    def __init__(self, meters: list[CudaMeter]) -> None:
        self.meters = meters
        self.device = "+".join(m.device for m in meters)
        self.peak_device = meters[0].device
        self.peaks: dict[str, int] = {}

    def reset_peak(self) -> None:
        for m in self.meters:
            m.reset_peak()

    def current(self) -> int:
        return max(m.current() for m in self.meters)

    def peak(self) -> int:
        self.peaks = {m.device: m.peak() for m in self.meters}
        self.peak_device = max(self.peaks, key=self.peaks.__getitem__)
        return self.peaks[self.peak_device]

    def available(self) -> int:
        return min(m.available() for m in self.meters)

    def describe(self) -> str:
        return " + ".join(m.describe() for m in self.meters)
