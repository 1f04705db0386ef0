"""dtype auto on the chosen GPU, models spread over several GPUs, and budgets on each of them.

No GPU here: torch.cuda and pynvml are faked at their boundary (as in test_devices.py), and
transformers' loading is faked where it would put layers on GPUs.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from fakes import FakeCuda, FakeNvml, xdist

from pytest_mmlu import gates
from pytest_mmlu.memory import meters
from pytest_mmlu.memory.cuda import CudaMeter, MultiCudaMeter
from pytest_mmlu.memory.meters import make_meter
from pytest_mmlu.models import workers
from pytest_mmlu.models.devices import gpus_to_spread, spread_max_memory
from pytest_mmlu.models.errors import ModelLoadError
from pytest_mmlu.models.load import load_model
from pytest_mmlu.models.plan import resolve_dtype
from pytest_mmlu.settings import Settings

GiB = 2**30
A100, T4, V100 = (8, 0), (7, 5), (7, 0)


class Capabilities:
    """torch.cuda's get_device_capability for a machine of mixed GPUs; ``current`` is the
    device torch would ask about when given no index."""

    def __init__(self, *per_gpu: tuple[int, int]) -> None:
        self.per_gpu, self.current = per_gpu, 0

    def get_device_capability(self, index=None):
        return self.per_gpu[self.current if index is None else index]

    def is_bf16_supported(self, including_emulation=True):
        return True  # what torch says on a T4 or V100: it counts emulation


# -- dtype auto ----------------------------------------------------------------------------------
def test_auto_keeps_a_half_checkpoint_where_the_gpu_runs_it_natively():
    cuda = Capabilities(A100)
    assert resolve_dtype("auto", "cuda:0", saved="bfloat16", cuda=cuda) == "bfloat16"
    assert resolve_dtype("auto", "cuda:0", saved="float16", cuda=cuda) == "float16"


def test_auto_never_picks_emulated_bfloat16():
    for old in (T4, V100):  # torch.cuda.is_bf16_supported() is True on both
        assert resolve_dtype("auto", "cuda:0", saved="bfloat16", cuda=Capabilities(old)) == "float32"
        assert resolve_dtype("auto", "cuda:0", saved="float16", cuda=Capabilities(old)) == "float16"


def test_auto_asks_the_chosen_gpu_not_the_current_one():
    cuda = Capabilities(T4, A100)  # torch's current device is the T4
    assert resolve_dtype("auto", "cuda:1", saved="bfloat16", cuda=cuda) == "bfloat16"
    cuda.current = 1
    assert resolve_dtype("auto", "cuda:0", saved="bfloat16", cuda=cuda) == "float32"
    # A model spread over both runs at the pace of the older one.
    assert resolve_dtype("auto", "cuda:0+cuda:1", saved="bfloat16", cuda=cuda) == "float32"


def test_auto_is_float32_for_float32_checkpoints_and_on_cpu():
    cuda = Capabilities(A100)
    assert resolve_dtype("auto", "cuda:0", saved="float32", cuda=cuda) == "float32"
    assert resolve_dtype("auto", "cuda:0", saved=None, cuda=cuda) == "float32"
    assert resolve_dtype("auto", "cpu", saved="bfloat16", cuda=cuda) == "float32"
    assert resolve_dtype("float16", "cuda:0", saved="bfloat16", cuda=Capabilities(T4)) == "float16"


def test_auto_reads_the_dtype_from_the_model_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "dtype": "bfloat16"}))
    assert resolve_dtype("auto", "cuda:0", str(tmp_path), cuda=Capabilities(A100)) == "bfloat16"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "torch_dtype": "float16"}))
    assert resolve_dtype("auto", "cuda:0", str(tmp_path), cuda=Capabilities(A100)) == "float16"


# -- one GPU or several ----------------------------------------------------------------------------
class FakeGpus:
    """torch.cuda for placement: device count and each GPU's free memory."""

    def __init__(self, free: list[int]) -> None:
        self.free = free

    def device_count(self):
        return len(self.free)

    def mem_get_info(self, index):
        return self.free[index], 80 * GiB


def test_fit_keeps_a_model_that_fits_on_one_gpu_and_spreads_one_that_does_not(gpus, monkeypatch):  # noqa: F811
    cuda = FakeGpus([70 * GiB, 70 * GiB])
    assert gpus_to_spread("fit", "cuda:0", 50 * GiB, cuda) is None
    assert gpus_to_spread("fit", "cuda:0", 60 * GiB, cuda) == [0, 1]  # > 80% of 70 GiB
    assert gpus_to_spread("auto", "cuda:0", 1 * GiB, cuda) == [0, 1]
    assert gpus_to_spread("single", "cuda:0", 500 * GiB, cuda) is None
    assert gpus_to_spread("auto", "cuda:0", None, FakeGpus([70 * GiB])) is None  # one GPU: nothing to spread
    assert gpus_to_spread("auto", "cpu", None, cuda) is None


def test_workers_spreading_over_every_gpu_split_each_gpus_memory(gpus, monkeypatch):  # noqa: F811
    xdist(monkeypatch, worker=1, workers=2)
    cuda = FakeGpus([60 * GiB, 40 * GiB])
    assert gpus_to_spread("auto", "cuda:1", None, cuda) == [0, 1]
    assert workers.sharers("auto", "cuda:0+cuda:1", 2, workers.Workers.of_this_process()) == {0: 2, 1: 2}
    assert spread_max_memory([0, 1], cuda) == {0: int(30 * GiB * 0.9), 1: int(20 * GiB * 0.9)}
    # "fit" judges against this worker's share: 25 GiB fits 40 GiB free alone, not half of it.
    assert gpus_to_spread("fit", "cuda:1", 25 * GiB, cuda, shared={1: 1}) is None
    assert gpus_to_spread("fit", "cuda:1", 25 * GiB, cuda, shared={1: 2}) == [0, 1]


def spread_model(monkeypatch, tiny_model_dir, placed: dict, gpu_free=(70 * GiB, 70 * GiB)):
    """load_model on two fake GPUs, with from_pretrained faked to place layers as ``placed``;
    returns what from_pretrained was asked, and the loaded model."""
    import torch
    from transformers import AutoModelForCausalLM

    fake = FakeGpus(list(gpu_free))
    monkeypatch.setattr(torch.cuda, "mem_get_info", fake.mem_get_info)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: A100)
    asked = {}
    real = AutoModelForCausalLM.from_pretrained

    def from_pretrained(name, **kwargs):
        asked.update(kwargs)
        model = real(name, dtype=kwargs["dtype"])  # on the CPU
        model.hf_device_map = placed
        return model

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    loaded = load_model(Settings(model=str(tiny_model_dir), device="cuda", device_map="auto"))
    return asked, loaded


def test_device_map_auto_loads_with_accelerates_map_on_every_gpu(gpus, monkeypatch, tiny_model_dir):  # noqa: F811
    asked, loaded = spread_model(
        monkeypatch, tiny_model_dir, {"model.embed_tokens": 0, "model.layers": 1, "lm_head": 1}
    )
    assert asked["device_map"] == "auto"
    assert asked["max_memory"] == {0: int(70 * GiB * 0.9), 1: int(70 * GiB * 0.9)}
    assert loaded.device == "cuda:0+cuda:1"


def test_a_model_that_spills_off_the_gpus_is_refused(gpus, monkeypatch, tiny_model_dir):  # noqa: F811
    with pytest.raises(ModelLoadError) as info:
        spread_model(monkeypatch, tiny_model_dir, {"model.embed_tokens": 0, "model.layers": 1, "lm_head": "cpu"})
    assert str(info.value) == (
        f"cannot load model folder {tiny_model_dir}: it does not fit on the 2 GPUs "
        f"(placed on 0, 1, cpu): give them more free memory, or quantize it "
        f"(--mmlu-quantization)"
    )


# -- the meter and the budget on every GPU ---------------------------------------------------------
def two_gpu_meter():
    first, second = FakeCuda(), FakeCuda()
    meter = MultiCudaMeter(
        [CudaMeter(0, nvml=FakeNvml(0), torch_cuda=first), CudaMeter(1, nvml=FakeNvml(0), torch_cuda=second)]
    )
    return meter, first, second


def test_the_meter_watches_every_gpu_and_names_the_highest(gpus):  # noqa: F811
    meter, first, second = two_gpu_meter()
    meter.reset_peak()
    first.max_reserved, second.max_reserved = 9 * GiB, 12 * GiB
    assert meter.peak() >= 12 * GiB and meter.peak_device == "cuda:1"
    assert set(meter.peaks) == {"cuda:0", "cuda:1"}
    first.max_reserved = 20 * GiB
    meter.peak()
    assert meter.peak_device == "cuda:0"
    second.free = 10 * GiB
    assert meter.available() == 10 * GiB  # the tightest GPU bounds the batch
    assert meter.describe() == (
        "cuda:0 (NVIDIA H100 80GB HBM3, 80.00 GiB; torch + NVML per process) + "
        "cuda:1 (NVIDIA H100 80GB HBM3, 80.00 GiB; torch + NVML per process)"
    )


def test_make_meter_builds_one_meter_per_gpu_of_a_spread_model(gpus, monkeypatch):  # noqa: F811
    made = []
    monkeypatch.setattr(
        meters,
        "CudaMeter",
        lambda index, sharers: made.append((index, sharers)) or SimpleNamespace(device=f"cuda:{index}"),
    )
    meter = make_meter("cuda:0+cuda:1+cuda:3", {0: 2, 1: 2, 3: 2})
    assert isinstance(meter, MultiCudaMeter) and meter.device == "cuda:0+cuda:1+cuda:3"
    assert made == [(0, 2), (1, 2), (3, 2)]  # every worker spreads over every GPU: each meter knows it


def test_the_budget_line_names_the_gpu_over_budget():
    from pytest_mmlu.mmlu.results import EvaluationResult

    result = EvaluationResult(
        subjects=("anatomy",),
        shots=5,
        limit=None,
        label="anatomy",
        questions=[],
        peak_memory_bytes=30 * GiB,
        budget_bytes=24 * GiB,
        batch_size=4,
        batch_sizes=[4],
        seconds=1.0,
        tokens=10,
        device="cuda:0+cuda:1",
        dtype="bfloat16",
        weight_bytes=40 * GiB,
        peak_device="cuda:1",
    )
    line = gates.budget(result).line
    assert line.startswith(
        "MMLU memory budget exceeded: peak 30.00 GiB > budget 24.00 GiB on cuda:1 "
        "(model on cuda:0+cuda:1) (weights 40.00 GiB"
    )
    assert EvaluationResult.from_dict(result.to_dict()).peak_device == "cuda:1"
