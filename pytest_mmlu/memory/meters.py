"""What a memory budget measures: the peak memory of the device the model runs on, weights
included.

- CPU: the process's peak resident set size (``VmHWM``), reset before each evaluation by
  writing ``5`` to ``/proc/self/clear_refs``. Without /proc (macOS, Windows): psutil's RSS,
  sampled between reset and read, or the OS's lifetime peak when it moved in between.
- CUDA: torch's peak *reserved* memory on the device plus what this process uses beyond
  torch's reservation (CUDA context, cuBLAS workspaces, other libraries): NVML's per-process
  figure; where NVML does not list this process (PID namespaces in containers, MIG without
  privileges), the growth of the device's used memory (``mem_get_info``) beyond torch's since
  the meter started; torch's figures alone where neither is sound.  ``describe()`` says which.
- A model spread over several GPUs (accelerate's device map): every GPU it uses, each
  measured as above; the budget bounds each of them (``MultiCudaMeter``).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from ..models.workers import cuda_indices
from ..sizes import format_gib
from ..text import first_line
from .errors import MeterUnavailable

_CLEAR_REFS = "/proc/self/clear_refs"


_PROC_STATUS = "/proc/self/status"


def _status_kib(field: str) -> int:
    with open(_PROC_STATUS) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"{field} not in {_PROC_STATUS}")


def _cgroup_available() -> int | None:
    try:
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        used = int(open("/sys/fs/cgroup/memory.current").read())
    except OSError:
        return None
    return None if limit == "max" else max(0, int(limit) - used)


class CpuMeter:
    """Process RSS on Linux."""

    device = "cpu"

    def __init__(self) -> None:
        self.can_reset = os.access(_CLEAR_REFS, os.W_OK)

    def reset_peak(self) -> None:
        if self.can_reset:
            with open(_CLEAR_REFS, "w") as f:
                f.write("5")

    def current(self) -> int:
        return _status_kib("VmRSS")

    def peak(self) -> int:
        return _status_kib("VmHWM")

    def available(self) -> int:
        """Bytes this process may still grow by: MemAvailable, and the cgroup limit if lower."""
        with open("/proc/meminfo") as f:
            info = {ln.split(":")[0]: int(ln.split()[1]) * 1024 for ln in f}
        free = info.get("MemAvailable", info.get("MemFree", 0))
        cg = _cgroup_available()
        return free if cg is None else min(free, cg)

    def describe(self) -> str:
        return "cpu"


class PsutilCpuMeter:
    """Process RSS where there is no /proc (macOS, Windows), through psutil.

    The peak since a reset: the OS's lifetime peak (``getrusage``, Windows' peak working
    set) when it rose since the reset, which makes it this window's exact peak; else the
    highest RSS a thread sampled every few milliseconds since the reset.
    """

    device = "cpu"
    INTERVAL = 0.005

    def __init__(self) -> None:
        try:
            import psutil
        except ImportError:
            psutil = None
        self._psutil = psutil
        self._proc = psutil.Process() if psutil is not None else None
        self._lock = threading.Lock()
        self._sampled = 0
        self._window = 0  # reset count: the sampler keeps only readings of the current window
        self._lifetime_at_reset: int | None = None
        self._sampler: threading.Thread | None = None

    def _require(self) -> Any:
        if self._proc is None:
            raise MeterUnavailable(
                f"cannot measure memory on {sys.platform}: there is no {_PROC_STATUS} "
                f"and psutil is not installed: pip install psutil")
        return self._proc

    def _lifetime_peak(self) -> int | None:
        info = self._require().memory_info()
        if hasattr(info, "peak_wset"):  # Windows
            return int(info.peak_wset)
        try:
            import resource
        except ImportError:
            return None
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss if sys.platform == "darwin" else maxrss * 1024  # macOS: bytes; else KiB

    def _sample(self) -> None:
        while True:
            with self._lock:
                window = self._window
            rss = self._proc.memory_info().rss
            with self._lock:
                if window == self._window:  # a reading taken before a reset belongs to no window
                    self._sampled = max(self._sampled, rss)
            time.sleep(self.INTERVAL)

    def reset_peak(self) -> None:
        self._lifetime_at_reset = self._lifetime_peak()
        with self._lock:
            self._window += 1
            self._sampled = self.current()
        if self._sampler is None:
            self._sampler = threading.Thread(target=self._sample, name="pytest-mmlu-rss", daemon=True)
            self._sampler.start()

    def current(self) -> int:
        return int(self._require().memory_info().rss)

    def peak(self) -> int:
        lifetime = self._lifetime_peak()
        if lifetime is not None and (self._lifetime_at_reset is None or lifetime > self._lifetime_at_reset):
            return lifetime  # a new high for the process since the reset: this window's peak
        with self._lock:
            return max(self._sampled, self.current())

    def available(self) -> int:
        self._require()
        return int(self._psutil.virtual_memory().available)

    def describe(self) -> str:
        if self._proc is None:
            return f"cpu (no memory meter on {sys.platform}: pip install psutil)"
        return "cpu (RSS via psutil)"


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

    def __init__(self, index: int, nvml: Any | None = None, torch_cuda: Any | None = None,
                 sharers: int | None = None) -> None:
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
            self._why = (f"{reason}; {self.sharers} workers share this GPU, so device-wide "
                         f"figures would count theirs")
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


def make_meter(device: str, shared: Mapping[int, int] | None = None,
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
