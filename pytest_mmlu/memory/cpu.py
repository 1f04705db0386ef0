"""The CPU's meter: the process's resident memory and its peak, reset before each batch.

On Linux the peak resident set size (``VmHWM``), reset by writing ``5`` to
``/proc/self/clear_refs``. Without /proc (macOS, Windows): psutil's RSS, sampled between reset
and read, or the OS's lifetime peak when it moved in between.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

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
                f"and psutil is not installed: pip install psutil"
            )
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
        proc = self._require()
        while True:
            with self._lock:
                window = self._window
            rss = proc.memory_info().rss
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
