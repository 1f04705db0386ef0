from __future__ import annotations

import mmap
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from pytest_mmlu.memory import (
    BatchPlanner,
    BudgetTooSmall,
    CpuMeter,
    CudaMeter,
    RowCost,
    is_oom,
)

GiB = 2**30


class FakeNvml:
    """pynvml's surface as CudaMeter uses it: one GPU, this process using ``used`` bytes."""

    def __init__(self, used):
        self.used = used

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByUUID(self, uuid):
        assert uuid == "GPU-1234"
        return "handle"

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [SimpleNamespace(pid=os.getpid(), usedGpuMemory=self.used),
                SimpleNamespace(pid=1, usedGpuMemory=50 * GiB)]  # another process: not ours

    def nvmlDeviceGetName(self, handle):
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(total=80 * GiB)


class FakeCuda:
    """torch.cuda's memory statistics for one device."""

    def __init__(self):
        self.reserved, self.max_reserved, self.free = 3 * GiB, 5 * GiB, 60 * GiB

    def get_device_properties(self, index):
        return SimpleNamespace(uuid="1234", name="fake", total_memory=80 * GiB)

    def memory_reserved(self, index):
        return self.reserved

    def max_memory_reserved(self, index):
        return self.max_reserved

    def reset_peak_memory_stats(self, index):
        self.max_reserved = self.reserved

    def synchronize(self, index):
        pass

    def mem_get_info(self, index):
        return self.free, 80 * GiB


def test_cuda_peak_is_torch_reserved_plus_what_nvml_sees_outside_it():
    nvml, cuda = FakeNvml(used=int(3.5 * GiB)), FakeCuda()
    meter = CudaMeter(0, nvml=nvml, torch_cuda=cuda)
    assert meter.current() == int(3.5 * GiB)  # 3 GiB reserved + 0.5 GiB context
    meter.reset_peak()
    cuda.max_reserved = 7 * GiB
    assert meter.peak() == int(7.5 * GiB)
    assert meter.describe() == "cuda:0 (NVIDIA H100 80GB HBM3, 80.00 GiB; torch + NVML per process)"
    assert meter.available() == 60 * GiB


def test_cuda_meter_without_nvml_uses_torch_figures():
    class Broken(FakeNvml):
        def nvmlInit(self):
            raise RuntimeError("NVML Shared Library Not Found")

    cuda = FakeCuda()
    meter = CudaMeter(0, nvml=Broken(0), torch_cuda=cuda)
    assert meter.peak() == 5 * GiB
    assert meter.describe() == "cuda:0 (fake, 80.00 GiB; torch only: NVML unavailable: NVML Shared Library Not Found)"


def test_cpu_meter_resets_high_water_mark():
    # An anonymous mapping always takes fresh pages and gives them back on close; a
    # bytearray may reuse heap pages an earlier test in this worker already made resident.
    meter = CpuMeter()
    assert meter.can_reset
    assert_meter_sees_a_block_and_forgets_it_on_reset(meter)


def assert_meter_sees_a_block_and_forgets_it_on_reset(meter) -> None:
    """300 MiB touched in an anonymous mapping show in the peak; after close and a reset, not."""
    meter.reset_peak()
    before = meter.current()
    block = mmap.mmap(-1, 300 * 2**20)
    for offset in range(0, len(block), mmap.PAGESIZE):
        block[offset] = 1
    high = meter.peak()
    assert high >= before + 290 * 2**20
    block.close()
    meter.reset_peak()
    assert meter.peak() < high - 200 * 2**20


def test_oom_recognised():
    assert is_oom(RuntimeError("CUDA out of memory. Tried to allocate"))
    assert is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't allocate memory"))
    assert is_oom(MemoryError())
    assert not is_oom(RuntimeError("shape mismatch"))


def _planner(limit, baseline=1 * GiB, declared=True):
    cost = RowCost(kv_per_token=1000, act_per_token=10_000, attn_per_pair=0, logit_bytes=0)
    return BatchPlanner(cost, baseline, limit, "cpu", budget_declared=declared,
                        max_batch_tokens=10**9)


def test_planner_calibrates_then_fills_the_headroom():
    p = _planner(limit=2 * GiB)
    true_per_row = lambda rows: 1 * GiB + 20 * 2**20 + rows * 2 * 11_000 * 100
    assert p.rows(0, 100, 1, 1000) == 1
    p.observe(1, 0, 100, 1, true_per_row(1))
    assert p.rows(0, 100, 1, 1000) == 2
    p.observe(2, 0, 100, 1, true_per_row(2))
    rows = p.rows(0, 100, 1, 1000)
    assert true_per_row(rows) <= 2 * GiB
    assert true_per_row(rows) - GiB >= 0.6 * GiB  # uses most of the headroom


def test_planner_learns_from_a_batch_that_used_more():
    p = _planner(limit=2 * GiB)
    p.observe(1, 0, 100, 1, GiB + 1_100_000)
    p.observe(2, 0, 100, 1, GiB + 2_200_000)
    before = p.rows(0, 100, 1, 10**6)
    p.observe(before, 0, 100, 1, GiB + before * 3_000_000)
    assert p.rows(0, 100, 1, 10**6) < before


def test_budget_below_batch_one_names_the_minimum():
    p = _planner(limit=int(1.2 * GiB), baseline=int(1.1 * GiB))
    with pytest.raises(BudgetTooSmall, match=r"MMLU memory budget 1.20 GiB is too small on cpu: batch 1 needs about .*the minimum that would work is"):
        p.check_fits(0, 20_000, 1)


def test_planner_counts_every_prefix_token_held():
    p = _planner(limit=2 * GiB)
    assert p.predicted(1, 100, 10, 1, held=300) - p.predicted(1, 100, 10, 1) == 200 * 1000
    room = p.rows(100, 10, 1, 10**6, held=10**6)
    assert room < p.rows(100, 10, 1, 10**6) or room == 1


def test_heap_freed_by_earlier_work_is_released_before_an_evaluation():
    """Blocks under the mmap threshold are kept by the heap for reuse (no page faults), and a
    live block above them stops the automatic trim; release_cpu_memory hands them back."""
    script = """
from pytest_mmlu.memory import CpuMeter, configure_cpu_allocator, release_cpu_memory
configure_cpu_allocator()
meter = CpuMeter()
blocks = [bytearray(2**20) for _ in range(300)]
for b in blocks:
    b[::4096] = b"x" * len(b[::4096])
keep = bytearray(2**20)  # live, above the freed blocks
del blocks
before = meter.current()
release_cpu_memory()
print(before - meter.current())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert int(out.stdout) > 200 * 2**20


def test_allocator_slack_counts_until_measured():
    cost = RowCost(kv_per_token=1000, act_per_token=10_000, attn_per_pair=0, logit_bytes=0)
    row = 11_000 * 100

    def planner(slack):
        return BatchPlanner(cost, 1 * GiB, GiB + row + 32 * 2**20, "cpu", budget_declared=True,
                            max_batch_tokens=10**9, slack=slack)

    planner(0).check_fits(0, 100, 1)
    with pytest.raises(BudgetTooSmall, match=r"\+ allocator slack 0.06 GiB\)"):
        planner(64 * 2**20).check_fits(0, 100, 1)
    # Measured batches replace the assumed slack with the overhead they show.
    p = _planner(limit=2 * GiB)
    p.fixed = 64 * 2**20
    p.observe(1, 0, 100, 1, 1 * GiB + 5 * 2**20 + row)
    p.observe(2, 0, 100, 1, 1 * GiB + 5 * 2**20 + 2 * row)
    assert p.fixed == 5 * 2**20


def test_loading_a_cpu_model_fixes_the_allocator_before_loading(tiny_model_dir, monkeypatch):
    """Every way in (plugin, bench, lm-eval adapter) loads through load_model, so each gets the
    allocator its budgets were measured with, already while the weights are read."""
    import transformers

    from pytest_mmlu import loading
    from pytest_mmlu.settings import Settings

    events = []
    monkeypatch.setattr(loading, "configure_cpu_allocator", lambda: events.append("allocator"))
    real = transformers.AutoTokenizer.from_pretrained
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda *a, **k: events.append("load") or real(*a, **k))
    loaded = loading.load_model(Settings(model=str(tiny_model_dir), device="cpu"))
    assert loaded.device == "cpu"
    assert events == ["allocator", "load"]


def test_a_fixed_batch_size_still_halves_after_an_out_of_memory():
    """--mmlu-batch-size N with an OOM retried N rows for ever."""
    planner = BatchPlanner(RowCost(kv_per_token=1000, act_per_token=10_000, attn_per_pair=0, logit_bytes=0), 0, 2**40, "cpu", budget_declared=False,
                           max_batch_tokens=65536, fixed_rows=8)
    assert planner.rows(10, 20, 1, remaining=30) == 8
    planner.on_oom(8)
    assert planner.rows(10, 20, 1, remaining=30) == 4
    planner.on_oom(4)
    assert planner.rows(10, 20, 1, remaining=30) == 2
