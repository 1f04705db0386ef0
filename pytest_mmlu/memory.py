"""Device memory: what we measure, and how batches are sized to a budget.

What a budget measures (the peak memory of the device the model runs on,
weights included):
- CPU: the process's peak resident set size (``VmHWM``), reset before each
  evaluation by writing ``5`` to ``/proc/self/clear_refs``.
  Without /proc (macOS, Windows): psutil's RSS, sampled between reset and
  read, or the OS's lifetime peak when it moved in between.
- CUDA: torch's peak *reserved* memory on the device plus what this process uses
  beyond torch's reservation (CUDA context, cuBLAS workspaces, other libraries):
  NVML's per-process figure; where NVML does not list this process (PID
  namespaces in containers, MIG without privileges), the growth of the device's
  used memory (``mem_get_info``) beyond torch's since the meter started; torch's
  figures alone where neither is sound.  ``describe()`` says which.
- A model spread over several GPUs (accelerate's device map): every GPU it uses, each
  measured as above; the budget bounds each of them (``MultiCudaMeter``).

Batches are sized by a memory model: a per-row cost computed from the model's
config for the real sequence lengths, scaled by factors calibrated from the
measured peaks of the first batches, then checked after every batch.
"""

from __future__ import annotations

import ctypes
import gc
import math
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .sizes import format_gib

_CLEAR_REFS = "/proc/self/clear_refs"
_PROC_STATUS = "/proc/self/status"


class BudgetTooSmall(Exception):
    """Even one row does not fit: the message gives the minimum that would work."""

    def __init__(self, budget: int, minimum: int, device: str, detail: str) -> None:
        self.budget, self.minimum, self.device = budget, minimum, device
        super().__init__(
            f"MMLU memory budget {format_gib(budget)} is too small on {device}: batch 1 needs about "
            f"{format_gib(minimum)} ({detail}); the minimum that would work is "
            f"{format_gib(math.ceil(minimum / 2**20 / 64) * 64 * 2**20)}"
        )


class MeterUnavailable(Exception):
    """This platform offers no way to measure the process's memory (the message says what to install)."""


class OutOfMemory(Exception):
    """The device ran out of memory where no batch can shrink (one row, or a prefix pass)."""

    def __init__(self, device: str, where: str, limit: int, budget_declared: bool) -> None:
        bound = f"budget {format_gib(limit)}" if budget_declared else f"planned limit {format_gib(limit)}"
        super().__init__(
            f"MMLU evaluation ran out of memory on {device} {where} ({bound}): one row cannot be "
            f"split further; give the device more free memory, a larger budget, a smaller dtype, "
            f"or shorter prompts (fewer shots)")


def is_oom(exc: BaseException) -> bool:
    """True for CUDA OOM and CPU allocation failures (both surface as RuntimeError/MemoryError)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "DefaultCPUAllocator" in text
    )


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


def _libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: the allocator's defaults stand
        return None


HEAP_MMAP_THRESHOLD = 32 << 20
# Freed memory the heap may keep resident at its top: the planner counts it in every batch.
HEAP_TRIM_THRESHOLD = 64 << 20
# While a model loads: glibc's own initial thresholds, so that every weight-sized tensor,
# kept or temporary, gets a mapping of its own.
LOADING_THRESHOLD = 128 << 10
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def configure_cpu_allocator() -> None:
    """Fix glibc's thresholds so that resident memory follows what is live, at speed.

    Tensors of 32 MiB and more get their own mapping, returned to the OS when
    freed; smaller ones reuse freed heap blocks, and the heap is trimmed once 64 MiB
    at its top are free.  Fixed values, not glibc's history-dependent dynamic
    ones.  A small threshold (1 MiB, tried) mapped almost every tensor anew: 4 M
    page faults, a quarter of W5's time.
    Set by ``load_model`` for a CPU model, so every way in (the plugin, the bench,
    the lm-eval adapter) evaluates with the same allocator.
    """
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD)


@contextmanager
def cpu_allocator_for_loading() -> Iterator[None]:
    """Load a CPU model with small thresholds, then set the evaluation's (above).

    Quantizing at load, converting a dtype or merging an adapter frees full-precision
    copies of the weights.  Left on the heap, they are holes between the tensors kept;
    the evaluation's activations then land in them page after page, and freed pages
    in the middle of the heap stay resident.  SmolLM2 int8 loaded after the fp32
    model evaluated 120 questions at 0.78 GiB (heap 650 MiB free), breaching the
    example's 768 MiB; loaded this way, 0.71-0.72 GiB (17-24 MiB free).  glibc maps a block
    only when its free lists and heap top cannot serve it, so the top is trimmed
    promptly while loading too.
    """
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, LOADING_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, LOADING_THRESHOLD)
    try:
        yield
    finally:
        configure_cpu_allocator()


def release_cpu_memory() -> None:
    """Hand the heap's free pages back to the OS (``malloc_trim``)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def release_memory(device: str) -> None:
    """Free what nothing uses: Python's garbage, then the free memory the allocator keeps
    (glibc's heap on CPU, torch's cache on CUDA).  Before an evaluation, so that its
    baseline is what is live now; after an out-of-memory error, before the retry."""
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
    else:
        release_cpu_memory()


def first_line(exc: BaseException) -> str:
    """An exception's first line (its type's name when it says nothing), for one-line messages."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
        self.sharers = gpu_sharers(index) if sharers is None else sharers
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


def make_meter(device: str) -> CpuMeter | PsutilCpuMeter | CudaMeter | MultiCudaMeter:
    """The meter of ``device``: ``cpu``, ``cuda:N``, or ``cuda:0+cuda:1`` for a spread model."""
    if "+" in device:
        return MultiCudaMeter([CudaMeter(int(part.split(":")[1])) for part in device.split("+")])
    if device.startswith("cuda"):
        return CudaMeter(int(device.split(":")[1]) if ":" in device else 0)
    if os.path.exists(_PROC_STATUS):
        return CpuMeter()
    return PsutilCpuMeter()  # no /proc: macOS, Windows


@dataclass(frozen=True)
class RowCost:
    """Analytic bytes for one row of a batch (before calibration)."""

    kv_per_token: int  # cache bytes per token, all layers (kept for the whole forward)
    act_per_token: int  # transient activation bytes per suffix token (one layer live at a time)
    attn_per_pair: int  # bytes per (query, key) pair when attention scores are materialized
    logit_bytes: int  # bytes per scored position (vocab row, its log-softmax, a copy)

    @classmethod
    def from_config(cls, config: Any, dtype_bytes: int) -> RowCost:
        cfg = getattr(config, "text_config", None) or config
        hidden = _first(cfg, "hidden_size", "n_embd")
        layers = _first(cfg, "num_hidden_layers", "n_layer")
        heads = _first(cfg, "num_attention_heads", "n_head")
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        head_dim = getattr(cfg, "head_dim", None) or hidden // heads
        inter = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * hidden
        vocab = cfg.vocab_size
        return cls(
            # k and v per layer, plus one layer's GQA-expanded copy while attention runs.
            kv_per_token=2 * head_dim * dtype_bytes * (layers * kv_heads + heads),
            act_per_token=dtype_bytes * (10 * hidden + 4 * inter + 3 * heads * head_dim),
            attn_per_pair=2 * heads * 4,
            logit_bytes=3 * vocab * 4,
        )

    def row_bytes(self, prefix: int, suffix: int, scored: int, shared: bool = False) -> int:
        """Bytes one row adds; ``shared``: packed after a prefix kept once (attention.py),
        so a row holds only its own keys and values, and attention is tiled."""
        if shared:
            return (self.kv_per_token + self.act_per_token) * suffix + self.logit_bytes * scored
        total = prefix + suffix
        return (self.kv_per_token * total + self.act_per_token * suffix
                + self.attn_per_pair * suffix * total + self.logit_bytes * scored)


def _first(cfg: Any, *names: str) -> int:
    for n in names:
        v = getattr(cfg, n, None)
        if v:
            return int(v)
    raise ValueError(f"config has none of {names}")


class BatchPlanner:
    """Chooses rows per batch so that the measured peak stays under ``limit``.

    peak ~= baseline + prefix_cache + fixed + scale * rows * row_bytes(P, S, k),
    where prefix_cache covers the ``held`` prefix tokens (default: the P tokens).
    ``scale`` starts at 1.0 and ``fixed`` at the allocator's slack, and both are re-fitted from the
    measured peaks: after the first two batches at 1 and 2 rows, and upward
    after any batch that used more than predicted.  ``fixed`` never drops below the slack:
    the freed memory the heap keeps resident depends on its state, not on the batch, so a
    calibration that caught it low says nothing of later batches (an int8 SmolLM2 calibrated
    at 29 MiB of overhead; a later batch showed 64 MiB more and breached 0.8 GiB by 12 MiB).
    """

    SAFETY = 0.92  # plan to this share of the headroom; the rest absorbs measurement noise
    # A calibrated row cost below this share of the model's is not believed: the growth from
    # one row to two was lost in the allocator's noise (int8 SmolLM2: flat, then 0.3-0.7).
    MIN_SCALE = 0.25

    def __init__(self, cost: RowCost, baseline: int, limit: int, device: str,
                 budget_declared: bool, max_batch_tokens: int, fixed_rows: int | None = None,
                 slack: int = 0) -> None:
        self.cost = cost
        self.baseline = baseline
        self.limit = limit
        self.device = device
        self.budget_declared = budget_declared
        self.max_batch_tokens = max_batch_tokens
        self.fixed_rows = fixed_rows
        self.scale = 1.0
        self.slack = slack
        self.fixed = slack  # the overhead of any batch: at least the allocator's slack
        self._calibration: list[tuple[int, float]] = []  # (rows*row_bytes, measured delta)
        self.oom_cap: int | None = None
        self.shared_prefix = False  # set by the engine when batches are packed after a shared prefix

    def _row(self, prefix: int, suffix: int, scored: int) -> int:
        return self.cost.row_bytes(prefix, suffix, scored, self.shared_prefix)

    def _prefix_cache(self, prefix: int, held: int | None) -> int:
        """Bytes of the prefix keys and values held (``held`` tokens, else the P tokens)."""
        return self.cost.kv_per_token * (prefix if held is None else held)

    def predicted(self, rows: int, prefix: int, suffix: int, scored: int, held: int | None = None) -> int:
        per_row = self._row(prefix, suffix, scored)
        return int(self.baseline + self._prefix_cache(prefix, held) + self.fixed
                   + self.scale * rows * per_row)

    def check_fits(self, prefix: int, suffix: int, scored: int, held: int | None = None) -> None:
        """Raise BudgetTooSmall if one row of this shape cannot fit."""
        need = self.predicted(1, prefix, suffix, scored, held)
        if need > self.limit and (self.budget_declared or self.fixed_rows is None):
            detail = (f"model and runtime {format_gib(self.baseline)} + one row of "
                      f"{prefix + suffix} tokens")
            if self.fixed:
                detail += f" + allocator slack {format_gib(self.fixed)}"
            raise BudgetTooSmall(self.limit, need, self.device, detail)

    def rows(self, prefix: int, suffix: int, scored: int, remaining: int, held: int | None = None) -> int:
        if self.fixed_rows is not None:  # a fixed batch size still halves after an out-of-memory
            return max(1, min(self.fixed_rows, remaining, self.oom_cap or remaining))
        if len(self._calibration) < 2:
            wanted = len(self._calibration) + 1  # calibrate at 1 row, then 2
        else:
            per_row = self.scale * self._row(prefix, suffix, scored)
            room = (self.limit - self.baseline) * self.SAFETY - self.fixed \
                - self._prefix_cache(prefix, held)
            wanted = int(room // per_row) if per_row > 0 else remaining
        token_cap = max(1, self.max_batch_tokens // max(1, suffix))
        rows = min(wanted, token_cap, remaining)
        if self.oom_cap is not None:
            rows = min(rows, self.oom_cap)
        # Calibration batches must fit too: shrink until the prediction does.
        while rows > 1 and self.predicted(rows, prefix, suffix, scored, held) > self.limit:
            rows -= 1
        return max(1, rows)

    def observe(self, rows: int, prefix: int, suffix: int, scored: int, peak: int,
                held: int | None = None) -> None:
        if self.fixed_rows is not None:
            return
        x = rows * self._row(prefix, suffix, scored)
        y = peak - self.baseline - self._prefix_cache(prefix, held)
        if len(self._calibration) < 2:
            self._calibration.append((x, y))
            if len(self._calibration) == 2:
                (x1, y1), (x2, y2) = self._calibration
                if x2 > x1 and y2 - y1 >= self.MIN_SCALE * (x2 - x1):
                    self.scale = (y2 - y1) / (x2 - x1)
                    self.fixed = max(self.slack, int(y1 - self.scale * x1))
                elif self.slack:  # the second row hid in the heap's slack: the model's row cost
                    self.scale = 1.0
                    self.fixed = max(self.slack, int(y2 - x2))
                else:  # no usable slope: attribute everything to rows (conservative)
                    self.scale = max(1.0, max(y1 / x1, y2 / x2))
            else:
                self.scale = max(self.scale, y / x)
        elif y > self.fixed + self.scale * x:
            self.scale = (y - self.fixed) / x

    def out_of_memory(self, where: str) -> OutOfMemory:
        """The error for an out-of-memory where nothing can shrink, naming this planner's bound."""
        return OutOfMemory(self.device, where, self.limit, self.budget_declared)

    def on_oom(self, rows: int) -> None:
        self.oom_cap = max(1, rows // 2)
