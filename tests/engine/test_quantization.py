"""Quantized loading: each method's configuration on each device, its one-line refusals, the
stored bytes of quantized weights, and the planner's inputs on a quantized model.

CUDA-only methods are checked as far as CPU allows: the configuration transformers receives,
built with torch.cuda's capability faked, and the error where the machine cannot run them.
"""

from __future__ import annotations

import json
import shutil

import pytest

from pytest_mmlu.models import quantization
from pytest_mmlu.models.errors import ModelLoadError
from pytest_mmlu.models.load import estimate_weight_bytes, load_model
from pytest_mmlu.models.quantization import INSTALL, QuantizationUnavailable, plan, stored_bytes
from pytest_mmlu.models.variants import Variant
from pytest_mmlu.outputs.header import variant_lines
from pytest_mmlu.settings import Settings

torchao = pytest.importorskip("torchao", reason="needs the quant extra: pip install 'pytest-mmlu[quant]'")

A100, A10, T4 = (8, 0), (8, 6), (7, 5)


def cuda_plan(method: str, capability=A100, dtype="bfloat16", dtype_setting="auto", installed=None):
    return plan(
        method,
        "cuda:0",
        dtype,
        dtype_setting,
        capability=lambda i: capability,
        device_name=lambda i: {A100: "NVIDIA A100", A10: "NVIDIA A10G", T4: "Tesla T4"}[capability],
        installed=installed or (lambda name: True),
    )


# -- the configuration each method builds ----------------------------------------------------------
def test_cpu_methods_are_torchao_weight_only():
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig

    int8 = plan("int8", "cpu", "float32")
    assert isinstance(int8.config.quant_type, Int8WeightOnlyConfig) and int8.dtype == "float32"
    int4 = plan("int4", "cpu", "float32")
    assert isinstance(int4.config.quant_type, IntxWeightOnlyConfig)
    assert str(int4.config.quant_type.weight_dtype) == "torch.int4"
    assert int4.config.quant_type.granularity.group_size == quantization.INT4_GROUP
    assert int4.description == "int4 (torchao IntxWeightOnlyConfig)"


def test_cuda_configurations_are_built_as_each_library_expects():
    import torch
    from torchao.quantization import Float8WeightOnlyConfig, Int4WeightOnlyConfig

    nf4 = cuda_plan("nf4").config
    assert nf4.load_in_4bit and nf4.bnb_4bit_quant_type == "nf4" and nf4.bnb_4bit_use_double_quant
    assert nf4.bnb_4bit_compute_dtype == torch.bfloat16
    assert cuda_plan("nf4", dtype="float16").config.bnb_4bit_compute_dtype == torch.float16
    bnb8 = cuda_plan("bnb-int8").config
    assert bnb8.load_in_8bit and not bnb8.load_in_4bit
    int4 = cuda_plan("int4", dtype="float32")  # tinygemm computes in bfloat16, whatever auto chose
    assert isinstance(int4.config.quant_type, Int4WeightOnlyConfig) and int4.dtype == "bfloat16"
    assert int4.config.quant_type.int4_packing_format == "tile_packed_to_4d"  # a str enum in torchao
    fp8 = cuda_plan("fp8", capability=(9, 0))
    assert isinstance(fp8.config.quant_type, Float8WeightOnlyConfig)


@pytest.mark.parametrize("method", ["nf4", "bnb-int8"])
def test_bitsandbytes_on_cpu_is_one_line_naming_what_runs_there(method, tiny_model_dir):
    with pytest.raises(ModelLoadError) as info:
        load_model(Settings(model=str(tiny_model_dir), device="cpu"), Variant(method))
    assert str(info.value) == (
        f"--mmlu-quantization={method} (bitsandbytes) runs on CUDA only; this run "
        f"is on cpu: on CPU use int8, int4, fp8 (torchao)"
    )


def test_a_gpu_too_old_for_a_method_is_named_with_what_it_can_run():
    with pytest.raises(QuantizationUnavailable) as info:
        cuda_plan("fp8", capability=A10)
    assert str(info.value) == (
        "--mmlu-quantization=fp8 needs CUDA compute capability 8.9 or newer; "
        "cuda:0 (NVIDIA A10G) is 8.6: use int8, int4, nf4, bnb-int8"
    )
    with pytest.raises(
        QuantizationUnavailable,
        match=r"int4 needs .* 8\.0 .* cuda:0 \(Tesla T4\) is 7\.5: "
        r"use int8, nf4, bnb-int8$",
    ):
        cuda_plan("int4", capability=T4)


def test_int4_on_cuda_refuses_a_dtype_it_cannot_compute_in():
    with pytest.raises(QuantizationUnavailable, match="int4 on CUDA computes in bfloat16.*--mmlu-dtype=float16"):
        cuda_plan("int4", dtype="float16", dtype_setting="float16")


def test_a_missing_library_names_the_extra_to_install():
    with pytest.raises(QuantizationUnavailable) as info:
        cuda_plan("nf4", installed=lambda name: name != "bitsandbytes")
    assert str(info.value) == f"--mmlu-quantization=nf4 needs bitsandbytes, which is not installed: {INSTALL}"
    assert INSTALL == "pip install 'pytest-mmlu[quant]'"


def test_a_missing_torchao_is_a_load_error_naming_the_extra(tiny_model_dir, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else real(name, *a))
    with pytest.raises(
        ModelLoadError, match=r"int8 needs torchao, which is not installed: pip install 'pytest-mmlu\[quant\]'"
    ):
        load_model(Settings(model=str(tiny_model_dir), device="cpu"), Variant("int8"))


# -- loading on CPU ------------------------------------------------------------------------------------
def linear_weights(model):
    import torch

    head = model.get_output_embeddings()
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head]


@pytest.mark.parametrize("method", ["int8", "int4", "fp8"])
def test_cpu_quantized_weights_count_their_stored_bytes(method, tiny_model_dir):
    full = load_model(Settings(model=str(tiny_model_dir), device="cpu"))
    quantized = load_model(Settings(model=str(tiny_model_dir), device="cpu"), Variant(method))
    assert quantized.quantization["description"].startswith(f"{method} (torchao ")
    assert quantized.variant.label == method and quantized.dtype == "float32"
    linears = linear_weights(quantized.model)
    assert all(type(w).__name__ != "Parameter" or w.dtype != full.model.dtype for w in linears)
    # Linear weights: one byte per weight (int4: one int4 value stored per byte) plus scales;
    # everything else (embeddings, norms, the head) stays float32 as in the full model.
    n_linear = sum(w.numel() for w in linear_weights(full.model))
    linear_bytes = stored_bytes(linears)
    assert n_linear < linear_bytes < 1.5 * n_linear
    assert quantized.weight_bytes - linear_bytes == full.weight_bytes - 4 * n_linear
    # The estimate made before loading (for --mmlu-device-map fit) is within the scales' share.
    estimate = estimate_weight_bytes(quantized.model.config, "float32", method, device="cpu")
    assert abs(estimate - quantized.weight_bytes) <= 0.3 * n_linear


def test_the_planner_costs_rows_in_the_activations_dtype(tiny_model_dir, mmlu_csv_dir):
    from pytest_mmlu.engine.planner import RowCost
    from pytest_mmlu.mmlu.data import MmluData
    from pytest_mmlu.mmlu.evaluation import Evaluator

    for dtype, size in (("float32", 4), ("bfloat16", 2)):
        loaded = load_model(Settings(model=str(tiny_model_dir), device="cpu", dtype=dtype), Variant("int8"))
        evaluator = Evaluator(loaded, MmluData(str(mmlu_csv_dir)))
        assert evaluator.row_cost == RowCost.from_config(loaded.model.config, size)


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_a_quantized_model_scores_as_its_float64_truth(method, tiny_model_dir, mmlu_csv_dir):
    """Shared prefixes and scored-only logits on quantized layers, against the float64 truth
    of the same quantized model: its dequantized weights in float64, one unpadded forward
    per row (tests/truth.py)."""
    from truth import truth_loglikelihoods

    from pytest_mmlu.marks import make_eval_spec
    from pytest_mmlu.mmlu.data import MmluData
    from pytest_mmlu.mmlu.evaluation import Evaluator

    loaded = load_model(Settings(model=str(tiny_model_dir), device="cpu"), Variant(method))
    evaluator = Evaluator(loaded, MmluData(str(mmlu_csv_dir)))
    spec = make_eval_spec(["anatomy", "virology"], 5, 3)
    requests, _ = evaluator.requests(spec)
    result = evaluator.evaluate(spec)
    assert result.engine_mode == "prefix"
    ours = [ll for q in result.questions for ll in q.loglikelihoods]
    truth = truth_loglikelihoods(loaded.model, requests, evaluator.max_length)
    # Measured 4e-7 (int8 and int4); the truth of the unquantized weights is 3e-4 away for int8.
    assert max(abs(a - b) for a, b in zip(ours, truth)) <= 1e-5


# -- checkpoints quantized already -------------------------------------------------------------------
def test_a_saved_torchao_checkpoint_loads_as_it_is_and_is_named(tiny_model_dir, tmp_path):
    loaded = load_model(Settings(model=str(tiny_model_dir), device="cpu"), Variant("int8"))
    saved = tmp_path / "tiny-int8"
    loaded.model.save_pretrained(saved)
    loaded.tokenizer.save_pretrained(saved)
    again = load_model(Settings(model=str(saved), device="cpu"))
    assert again.quantization == {
        "method": "torchao",
        "bits": None,
        "pre_quantized": True,
        "description": "torchao Int8WeightOnlyConfig (pre-quantized checkpoint)",
    }
    assert again.weight_bytes == loaded.weight_bytes
    assert variant_lines(Settings(model=str(saved))) == [
        "mmlu: quantization torchao Int8WeightOnlyConfig (pre-quantized checkpoint)"
    ]
    with pytest.raises(
        ModelLoadError,
        match=r"--mmlu-quantization=int8: model folder .* is already "
        r"quantized \(torchao Int8WeightOnlyConfig \(pre-quantized",
    ):
        load_model(Settings(model=str(saved), device="cpu"), Variant("int8"))


def test_a_gptq_checkpoint_without_its_library_is_one_line(tiny_model_dir, tmp_path):
    folder = tmp_path / "tiny-gptq"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {
        "quant_method": "gptq",
        "bits": 4,
        "group_size": 32,
        "desc_act": False,
        "sym": True,
    }
    (folder / "config.json").write_text(json.dumps(config))
    assert variant_lines(Settings(model=str(folder))) == ["mmlu: quantization gptq 4-bit (pre-quantized checkpoint)"]
    with pytest.raises(ModelLoadError) as info:
        load_model(Settings(model=str(folder), device="cpu"))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"cannot load model folder {folder}: ")
    assert "gptq" in message.lower()


def test_a_model_quantized_at_load_lets_go_of_the_checkpoint_file(tiny_model_dir, tmp_path):
    """Its unquantized tensors were views of the memory-mapped float32 checkpoint, which kept
    the file mapped and every weight read for quantization resident (SmolLM2 int8 peaked above
    fp32). Once copied, the file is no longer mapped."""
    import gc

    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    loaded = load_model(Settings(model=str(folder), device="cpu"), Variant("int8"))
    gc.collect()
    with open("/proc/self/maps") as maps:
        assert str(folder / "model.safetensors") not in maps.read()
    assert loaded.weight_bytes < load_model(Settings(model=str(folder), device="cpu")).weight_bytes


def test_the_lm_eval_model_takes_the_variant_from_model_args(tiny_model_dir):
    """``lm_eval --model pytest-mmlu --model_args pretrained=...,quantization=int8``."""
    from lm_eval.api.registry import get_model

    import pytest_mmlu.lm_eval_adapter  # noqa: F401 - registers the model

    lm = get_model("pytest-mmlu").create_from_arg_string(f"pretrained={tiny_model_dir},quantization=int8,device=cpu")
    assert lm.loaded.variant.label == "int8" and lm.loaded.quantization["library"] == "torchao"
    import torch

    ((score, _),) = lm._loglikelihood_tokens([(None, (5, 6, 7), (8,))])
    with torch.inference_mode():  # the same quantized model, one plain forward
        expected = lm.loaded.model(torch.tensor([[5, 6, 7]])).logits[0, -1].log_softmax(-1)[8].item()
    assert abs(score - expected) <= 1e-5
