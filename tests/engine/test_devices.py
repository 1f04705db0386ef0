"""Device edge cases: missing GPUs, containers, MIG, non-Linux CPUs, xdist workers on GPUs.

No GPU here: torch.cuda and pynvml are faked at their boundary (``fakes.py``).
"""

from __future__ import annotations

import os
import sys
import time
from types import SimpleNamespace

import pytest
from fakes import FakeCuda, FakeNvml, assert_meter_sees_a_block_and_forgets_it_on_reset, xdist

from pytest_mmlu.memory import meters
from pytest_mmlu.memory.cuda import CudaMeter
from pytest_mmlu.memory.errors import MeterUnavailable
from pytest_mmlu.memory.meters import make_meter
from pytest_mmlu.models import workers
from pytest_mmlu.models.devices import resolve_device
from pytest_mmlu.models.errors import ModelLoadError
from pytest_mmlu.models.load import load_model
from pytest_mmlu.settings import Settings

GiB = 2**30


# -- a device that does not exist -----------------------------------------------------------------
def test_a_gpu_index_beyond_the_visible_gpus_is_one_clear_line(gpus):
    with pytest.raises(ModelLoadError) as info:
        resolve_device("cuda:7")
    message = str(info.value)
    assert "\n" not in message
    assert "--mmlu-device=cuda:7" in message and "2 CUDA GPUs" in message and "cuda:0-cuda:1" in message


def test_loading_on_a_missing_gpu_fails_before_touching_cuda(gpus, tiny_model_dir):
    with pytest.raises(ModelLoadError, match=r"--mmlu-device=cuda:2: .*2 CUDA GPUs"):
        load_model(Settings(model=str(tiny_model_dir), device="cuda:2"))


# -- xdist workers ---------------------------------------------------------------------------------
def test_xdist_workers_spread_over_the_gpus(gpus, monkeypatch):
    xdist(monkeypatch, worker=3, workers=4)
    assert resolve_device("auto") == "cuda:1"
    assert resolve_device("cuda") == "cuda:1"
    assert resolve_device("cuda:0") == "cuda:0"  # an explicit GPU is the user's choice
    xdist(monkeypatch, worker=2, workers=4)
    assert resolve_device("auto") == "cuda:0"


def test_workers_sharing_a_gpu_share_its_free_memory(gpus, monkeypatch):
    cuda = FakeCuda()  # 60 GiB free
    assert CudaMeter(0, nvml=FakeNvml(0), torch_cuda=cuda).available() == 60 * GiB
    xdist(monkeypatch, worker=3, workers=4)
    device = resolve_device("auto")  # gw1 and gw3 on cuda:1
    shared = workers.sharers("auto", device, 2, workers.Workers.of_this_process())
    assert shared == {1: 2}
    assert CudaMeter(1, nvml=FakeNvml(0), torch_cuda=cuda, sharers=shared[1]).available() == 30 * GiB
    shared = workers.sharers("cuda:0", resolve_device("cuda:0"), 2, workers.Workers(3, 4))  # every worker on cuda:0
    assert CudaMeter(0, nvml=FakeNvml(0), torch_cuda=cuda, sharers=shared[0]).available() == 15 * GiB


def test_odd_worker_counts_divide_by_the_workers_on_that_gpu(gpus, monkeypatch):
    gpus(2)
    for index, expected in ((0, 30 * GiB), (1, 60 * GiB)):  # gw0, gw2 on cuda:0; gw1 alone on cuda:1
        xdist(monkeypatch, worker=index, workers=3)
        device = resolve_device("auto")
        (shared,) = workers.sharers("auto", device, 2, workers.Workers.of_this_process()).values()
        meter = CudaMeter(int(device[-1]), nvml=FakeNvml(0), torch_cuda=FakeCuda(), sharers=shared)
        assert meter.available() == expected


# -- NVML does not list this process (containers: PID namespaces) ---------------------------------
class HostPidNvml(FakeNvml):
    """NVML in a container lists host PIDs: this process appears under another number."""

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [SimpleNamespace(pid=os.getpid() + 100_000, usedGpuMemory=self.used)]


class DeviceCuda(FakeCuda):
    """FakeCuda whose free memory follows what torch reserves plus memory outside torch."""

    def __init__(self):
        super().__init__()
        self.others, self.outside = 10 * GiB, 512 * 2**20  # other processes; our context

    def mem_get_info(self, index):
        return 80 * GiB - self.others - self.reserved - self.outside, 80 * GiB


def test_process_missing_from_nvml_falls_back_to_mem_get_info_deltas(gpus):
    cuda = DeviceCuda()
    meter = CudaMeter(0, nvml=HostPidNvml(used=int(3.5 * GiB)), torch_cuda=cuda)
    meter.reset_peak()
    assert meter.current() == 3 * GiB  # the start: nothing outside torch counted yet
    cuda.outside += 1 * GiB  # e.g. cuBLAS workspaces
    cuda.reserved = cuda.max_reserved = 4 * GiB
    assert meter.current() == 5 * GiB
    assert meter.peak() == 5 * GiB
    assert "mem_get_info" in meter.describe() and "not in NVML's process list" in meter.describe()


def test_shared_gpu_without_pid_match_uses_torch_figures_and_says_so(gpus, monkeypatch):
    gpus(1)
    xdist(monkeypatch, worker=0, workers=2)
    (shared,) = workers.sharers("auto", resolve_device("auto"), 1, workers.Workers.of_this_process()).values()
    cuda = DeviceCuda()
    meter = CudaMeter(0, nvml=HostPidNvml(used=int(3.5 * GiB)), torch_cuda=cuda, sharers=shared)
    meter.reset_peak()
    cuda.others += 8 * GiB  # the other worker grows: not ours
    assert meter.current() == 3 * GiB
    assert "torch only" in meter.describe() and "2 workers" in meter.describe()


def test_before_cuda_is_used_an_unlisted_process_keeps_nvml(gpus):
    cuda = DeviceCuda()
    cuda.reserved = 0  # the header's meter: no context yet, so NVML cannot list us
    meter = CudaMeter(0, nvml=HostPidNvml(used=0), torch_cuda=cuda)
    assert meter.current() == 0
    assert "NVML" in meter.describe() and "mem_get_info" not in meter.describe()


# -- MIG ---------------------------------------------------------------------------------------------
class MigNvml(FakeNvml):
    """A MIG instance: found by its MIG- UUID only, no per-process memory without privileges."""

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if uuid != "MIG-1234":
            raise RuntimeError("NVML_ERROR_NOT_FOUND")
        return "mig-handle"

    def nvmlDeviceIsMigDeviceHandle(self, handle):
        return handle == "mig-handle"

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [SimpleNamespace(pid=os.getpid(), usedGpuMemory=None)]

    def nvmlDeviceGetName(self, handle):
        return "NVIDIA A100-SXM4-40GB MIG 3g.20gb"

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(total=20 * GiB)


def test_mig_instance_without_process_memory_falls_back_and_says_so(gpus):
    cuda = DeviceCuda()
    meter = CudaMeter(0, nvml=MigNvml(0), torch_cuda=cuda)
    meter.reset_peak()
    cuda.outside += GiB
    assert meter.current() == 4 * GiB
    text = meter.describe()
    assert text.startswith("cuda:0 (NVIDIA A100-SXM4-40GB MIG 3g.20gb, 20.00 GiB")
    assert "MIG" in text and "mem_get_info" in text


def test_mig_instance_nvml_cannot_find_is_torch_only_and_says_so(gpus):
    class Unknown(MigNvml):
        def nvmlDeviceGetHandleByUUID(self, uuid):
            raise RuntimeError("NVML_ERROR_NOT_FOUND")

    meter = CudaMeter(0, nvml=Unknown(0), torch_cuda=FakeCuda())
    assert meter.peak() == 5 * GiB
    assert meter.describe() == "cuda:0 (fake, 80.00 GiB; torch only: NVML has no device 1234 (MIG instance?))"


def test_describe_names_the_nvml_method(gpus):
    meter = CudaMeter(0, nvml=FakeNvml(int(3.5 * GiB)), torch_cuda=FakeCuda())
    meter.current()
    assert meter.describe() == "cuda:0 (NVIDIA H100 80GB HBM3, 80.00 GiB; torch + NVML per process)"


# -- CPU without /proc (macOS, Windows) ------------------------------------------------------------
def test_cpu_meter_without_proc_uses_psutil(tmp_path, monkeypatch):
    pytest.importorskip("psutil")
    monkeypatch.setattr(meters, "_PROC_STATUS", str(tmp_path / "no-proc" / "status"), raising=False)
    meter = make_meter("cpu")
    assert "psutil" in meter.describe()
    assert_meter_sees_a_block_and_forgets_it_on_reset(meter)
    assert meter.available() > 0


def test_psutil_meter_drops_a_reading_taken_before_a_reset(tmp_path, monkeypatch):
    """The sampler read a high RSS, then the block was freed and the peak reset, then the
    sampler stored its reading: that old high must not count in the new window."""
    import threading

    pytest.importorskip("psutil")
    monkeypatch.setattr(meters, "_PROC_STATUS", str(tmp_path / "no-proc" / "status"), raising=False)
    meter = make_meter("cpu")
    read, go = threading.Event(), threading.Event()
    rss = {"now": 10 * 2**30}  # far above the process's real lifetime peak: only the sampler sees it

    class Proc:
        def memory_info(self):
            value = rss["now"]
            if threading.current_thread().name == "pytest-mmlu-rss" and not go.is_set():
                read.set()
                go.wait(5)
            return SimpleNamespace(rss=value)

    meter._proc = Proc()
    meter.reset_peak()  # starts the sampler, which reads 10 GiB and waits
    assert read.wait(5)
    rss["now"] = 2**30
    meter.reset_peak()
    go.set()
    time.sleep(0.05)  # the sampler stores its stale reading, then samples 1 GiB
    assert meter.peak() == 2**30


def test_cpu_meter_without_proc_or_psutil_names_the_platform(tmp_path, monkeypatch):
    monkeypatch.setattr(meters, "_PROC_STATUS", str(tmp_path / "no-proc" / "status"), raising=False)
    monkeypatch.setitem(sys.modules, "psutil", None)
    meter = make_meter("cpu")
    assert "no memory meter" in meter.describe()  # the header still prints
    with pytest.raises(MeterUnavailable, match=rf"cannot measure memory on {sys.platform}: .*pip install psutil"):
        meter.current()
