"""Fakes of the GPU boundary (torch.cuda's memory figures, NVML, xdist's environment): no GPU in CI."""

from __future__ import annotations

import mmap
import os
from types import SimpleNamespace

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
        return [
            SimpleNamespace(pid=os.getpid(), usedGpuMemory=self.used),
            SimpleNamespace(pid=1, usedGpuMemory=50 * GiB),
        ]  # another process: not ours

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


def xdist(monkeypatch, worker: int, workers: int) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{worker}")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(workers))


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
