"""Device memory: what we measure, and how batches are sized to a budget.

What a budget measures (the peak memory of the device the model runs on,
weights included):
- CPU: the process's peak resident set size (``VmHWM``), reset before each
  evaluation by writing ``5`` to ``/proc/self/clear_refs``.
- CUDA: torch's peak *reserved* memory on the device plus what NVML reports
  this process using beyond torch's reservation (CUDA context, cuBLAS
  workspaces, other libraries).

Batches are sized by a memory model: a per-row cost computed from the model's
config for the real sequence lengths, scaled by factors calibrated from the
measured peaks of the first batches, then checked after every batch.
"""

from __future__ import annotations

import ctypes
import gc
import math
import os
from dataclasses import dataclass
from typing import Any

from .sizes import format_gib

_CLEAR_REFS = "/proc/self/clear_refs"


class BudgetTooSmall(Exception):
    """Even one row does not fit: the message gives the minimum that would work."""

    def __init__(self, budget: int, minimum: int, device: str, detail: str) -> None:
        self.budget, self.minimum, self.device = budget, minimum, device
        super().__init__(
            f"MMLU memory budget {format_gib(budget)} is too small on {device}: batch 1 needs about "
            f"{format_gib(minimum)} ({detail}); the minimum that would work is "
            f"{format_gib(math.ceil(minimum / 2**20 / 64) * 64 * 2**20)}"
        )


def is_oom(exc: BaseException) -> bool:
    """True for CUDA OOM and CPU allocation failures (both surface as RuntimeError/MemoryError)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "DefaultCPUAllocator" in text
    )


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"{field} not in /proc/self/status")


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
# Freed memory the heap may keep resident at its top: the planner counts it until measured.
HEAP_TRIM_THRESHOLD = 64 << 20


def configure_cpu_allocator() -> None:
    """Fix glibc's thresholds so that resident memory follows what is live, at speed.

    Tensors of 32 MiB and more get their own mapping, returned to the OS when
    freed; smaller ones reuse freed heap blocks, and the heap is trimmed once 64 MiB
    at its top are free.  Fixed values, not glibc's history-dependent dynamic
    ones.  A small threshold (1 MiB, tried) mapped almost every tensor anew: 4 M
    page faults, a quarter of W5's time.
    Called by ``load_model`` for a CPU model, so every way in (the plugin, the
    bench, the lm-eval adapter) runs with the same allocator.
    """
    libc = _libc()
    if libc is not None:
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, HEAP_MMAP_THRESHOLD)
        libc.mallopt(m_trim_threshold, HEAP_TRIM_THRESHOLD)


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


class CudaMeter:
    """torch's reserved memory plus NVML's view of this process on one GPU.

    ``nvml`` is the ``pynvml`` module (nvidia-ml-py); tests pass a fake.
    """

    def __init__(self, index: int, nvml: Any | None = None, torch_cuda: Any | None = None) -> None:
        if torch_cuda is None:
            import torch

            torch_cuda = torch.cuda
        self.cuda = torch_cuda
        self.index = index
        self.device = f"cuda:{index}"
        self._nvml = nvml
        self._handle = None
        if nvml is None:
            try:
                import pynvml

                nvml = pynvml
            except ImportError:
                nvml = None
        if nvml is not None:
            try:
                nvml.nvmlInit()
                uuid = str(self.cuda.get_device_properties(index).uuid)
                uuid = uuid if uuid.startswith("GPU-") else "GPU-" + uuid
                self._handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
                self._nvml = nvml
            except Exception:  # noqa: BLE001 - NVML missing or unusable: torch figures only
                self._nvml, self._handle = None, None
        self._outside_peak = 0

    def _outside_torch(self) -> int:
        """Bytes NVML sees this process using that torch's allocator did not reserve."""
        if self._handle is None:
            return 0
        try:
            procs = self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle)
        except Exception:  # noqa: BLE001
            return 0
        used = sum(p.usedGpuMemory or 0 for p in procs if p.pid == os.getpid())
        return max(0, used - self.cuda.memory_reserved(self.index))

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
        free, _total = self.cuda.mem_get_info(self.index)
        return free

    def describe(self) -> str:
        if self._handle is not None:
            name = self._nvml.nvmlDeviceGetName(self._handle)
            total = self._nvml.nvmlDeviceGetMemoryInfo(self._handle).total
        else:
            props = self.cuda.get_device_properties(self.index)
            name, total = props.name, props.total_memory
        name = name.decode() if isinstance(name, bytes) else name
        return f"{self.device} ({name}, {format_gib(total)})"


def make_meter(device: str) -> CpuMeter | CudaMeter:
    if device.startswith("cuda"):
        return CudaMeter(int(device.split(":")[1]) if ":" in device else 0)
    return CpuMeter()


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
    after any batch that used more than predicted.
    """

    SAFETY = 0.92  # plan to this share of the headroom; the rest absorbs measurement noise

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
        self.fixed = slack  # allocator slack, until the first batches measure the real overhead
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
        if self.fixed_rows is not None:
            return max(1, min(self.fixed_rows, remaining))
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
                if x2 > x1 and y2 > y1:
                    self.scale = max(0.25, (y2 - y1) / (x2 - x1))
                    self.fixed = max(0, int(y1 - self.scale * x1))
                else:  # no usable slope: attribute everything to rows (conservative)
                    self.scale = max(1.0, max(y1 / x1, y2 / x2))
            else:
                self.scale = max(self.scale, y / x)
        elif y > self.fixed + self.scale * x:
            self.scale = (y - self.fixed) / x

    def on_oom(self, rows: int) -> None:
        self.oom_cap = max(1, rows // 2)
