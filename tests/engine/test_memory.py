from __future__ import annotations

import subprocess
import sys

import pytest
from factories import ROOT
from fakes import FakeCuda, FakeNvml, assert_meter_sees_a_block_and_forgets_it_on_reset

from pytest_mmlu.engine.planner import BatchPlanner, RowCost
from pytest_mmlu.memory.cpu import CpuMeter
from pytest_mmlu.memory.cuda import CudaMeter
from pytest_mmlu.memory.errors import BudgetTooSmall, is_oom

GiB = 2**30


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


def test_oom_recognised():
    assert is_oom(RuntimeError("CUDA out of memory. Tried to allocate"))
    assert is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't allocate memory"))
    assert is_oom(MemoryError())
    assert not is_oom(RuntimeError("shape mismatch"))


def _planner(limit, baseline=1 * GiB, declared=True):
    cost = RowCost(kv_per_token=1000, act_per_token=10_000, attn_per_pair=0, logit_bytes=0)
    return BatchPlanner(cost, baseline, limit, "cpu", budget_declared=declared, max_batch_tokens=10**9)


def test_planner_calibrates_then_fills_the_headroom():
    p = _planner(limit=2 * GiB)

    def true_per_row(rows):
        return 1 * GiB + 20 * 2**20 + rows * 2 * 11_000 * 100

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
    with pytest.raises(
        BudgetTooSmall,
        match=r"MMLU memory budget 1.20 GiB is too small on cpu: batch 1 needs about .*the minimum that would work is",
    ):
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
from pytest_mmlu.memory.allocator import configure_cpu_allocator, release_cpu_memory
from pytest_mmlu.memory.meters import CpuMeter
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


def test_allocator_slack_counts_in_every_batch():
    cost = RowCost(kv_per_token=1000, act_per_token=10_000, attn_per_pair=0, logit_bytes=0)
    row = 11_000 * 100

    def planner(slack):
        return BatchPlanner(
            cost, 1 * GiB, GiB + row + 32 * 2**20, "cpu", budget_declared=True, max_batch_tokens=10**9, slack=slack
        )

    planner(0).check_fits(0, 100, 1)
    with pytest.raises(BudgetTooSmall, match=r"\+ allocator slack 0.06 GiB\)"):
        planner(64 * 2**20).check_fits(0, 100, 1)
    # Measured batches raise the overhead above the slack, never below it.
    p = _planner(limit=2 * GiB)
    p.fixed = p.slack = 64 * 2**20
    p.observe(1, 0, 100, 1, 1 * GiB + 5 * 2**20 + row)
    p.observe(2, 0, 100, 1, 1 * GiB + 5 * 2**20 + 2 * row)
    assert p.fixed == 64 * 2**20
    p = _planner(limit=2 * GiB)
    p.fixed = p.slack = 64 * 2**20
    p.observe(1, 0, 100, 1, 1 * GiB + 90 * 2**20 + row)
    p.observe(2, 0, 100, 1, 1 * GiB + 90 * 2**20 + 2 * row)
    assert p.fixed == 90 * 2**20


@pytest.mark.parametrize("calibration_kept", ["little", "hiding the second row"])
def test_a_batch_planned_after_calibration_fits_whatever_the_heap_kept(calibration_kept):
    """On CPU the peak carries up to the heap's trim threshold of freed memory, more or less of
    it from batch to batch.  Calibrated while it kept little, or while the second row's growth
    hid in it (a flat calibration), the planner must still plan batches that fit when it keeps
    all of it.  Measured: an int8 SmolLM2 calibrated flat, planned 37 rows at a quarter of the
    model's row cost, and breached 0.8 GiB."""
    slack = 64 * 2**20
    cost = RowCost(kv_per_token=1000, act_per_token=10_000, attn_per_pair=0, logit_bytes=0)
    row = cost.row_bytes(0, 100, 1)
    true_row = row // 2  # the analytic model overestimates, as it does for SmolLM2
    limit = GiB + 200 * 2**20
    p = BatchPlanner(cost, GiB, limit, "cpu", budget_declared=True, max_batch_tokens=10**9, slack=slack)

    def peak(rows, kept):
        return GiB + rows * true_row + kept

    # Hiding: the second row shows a tenth of the model's row cost, as measured.
    first, second = (
        (4 * 2**20, 4 * 2**20) if calibration_kept == "little" else (8 * 2**20, 8 * 2**20 - true_row + row // 10)
    )
    p.observe(p.rows(0, 100, 1, 10**6), 0, 100, 1, peak(1, first))
    p.observe(p.rows(0, 100, 1, 10**6), 0, 100, 1, peak(2, second))
    for _ in range(5):
        rows = p.rows(0, 100, 1, 10**6)
        assert peak(rows, slack) <= limit
        p.observe(rows, 0, 100, 1, peak(rows, 4 * 2**20))
    assert rows > 1


WEIGHT_MAPPED_SCRIPT = """
import ctypes, sys
import torch, transformers
from pytest_mmlu.models.load import load_model
from pytest_mmlu.settings import Settings

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def mapped_alone():
    before = libc.mallinfo2().hblkhd
    weight = torch.ones(2**22)  # 16 MiB of float32
    return libc.mallinfo2().hblkhd - before >= weight.nbytes

seen = []
real = transformers.AutoModelForCausalLM.from_pretrained
def from_pretrained(*args, **kwargs):
    seen.append(mapped_alone())
    return real(*args, **kwargs)
transformers.AutoModelForCausalLM.from_pretrained = from_pretrained
loaded = load_model(Settings(model=sys.argv[1], device="cpu"))
print(loaded.device, seen, mapped_alone())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heap statistics")
def test_a_cpu_model_loads_with_each_weight_mapped_and_evaluates_with_the_heap(tiny_model_dir):
    """While loading, a weight-sized tensor gets its own mapping: the float32 copies that a
    quantized, converted or merged load frees go back whole instead of staying as holes
    between the weights kept (the example's int8 SmolLM2 breached its 768 MiB through such
    holes, 650 MiB of them).  After loading, the evaluation's thresholds hold: blocks under
    32 MiB come from the heap, which reuses them without page faults.  Every way in (plugin,
    bench, lm-eval adapter) loads through load_model.  A fresh process: no free heap blocks
    left by other tests to serve the probe."""
    root = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", WEIGHT_MAPPED_SCRIPT, str(tiny_model_dir)],
        capture_output=True,
        text=True,
        cwd=root,
        check=True,
    )
    assert out.stdout.split("\n")[-2] == "cpu [True] False"


def test_a_fixed_batch_size_still_halves_after_an_out_of_memory():
    """--mmlu-batch-size N with an OOM retried N rows for ever."""
    planner = BatchPlanner(
        RowCost(kv_per_token=1000, act_per_token=10_000, attn_per_pair=0, logit_bytes=0),
        0,
        2**40,
        "cpu",
        budget_declared=False,
        max_batch_tokens=65536,
        fixed_rows=8,
    )
    assert planner.rows(10, 20, 1, remaining=30) == 8
    planner.on_oom(8)
    assert planner.rows(10, 20, 1, remaining=30) == 4
    planner.on_oom(4)
    assert planner.rows(10, 20, 1, remaining=30) == 2
