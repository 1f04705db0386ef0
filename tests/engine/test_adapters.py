"""PEFT adapters: applied on the base model, merged or not, refused where the engine cannot
score them, and part of the cache key by their files."""

from __future__ import annotations

import pytest

from pytest_mmlu.models.errors import ModelLoadError
from pytest_mmlu.models.load import load_model
from pytest_mmlu.models.variants import Variant
from pytest_mmlu.outputs.header import variant_lines
from pytest_mmlu.settings import Settings

peft = pytest.importorskip("peft", reason="needs the peft extra: pip install 'pytest-mmlu[peft]'")


def save_lora(base_dir, folder, seed: int = 1, scale: float = 1.0):
    """A LoRA adapter on every attention and MLP projection, its B matrices random (PEFT
    initialises them to zero, which would change nothing)."""
    import torch
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir)
    model = peft.get_peft_model(
        base,
        peft.LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"], init_lora_weights=False
        ),
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5 * scale)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def lora_dir(tiny_model_dir, tmp_path_factory):
    return save_lora(tiny_model_dir, tmp_path_factory.mktemp("adapters") / "lora")


def logits(model, ids=(0, 5, 17, 33, 101, 7, 250)):
    import torch

    with torch.inference_mode():
        return model(torch.tensor([list(ids)])).logits[0]


def test_the_adapted_model_is_peft_s_own(tiny_model_dir, lora_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    settings = Settings(model=str(tiny_model_dir), device="cpu", adapter=str(lora_dir))
    loaded = load_model(settings)
    assert loaded.variant == Variant("none", str(lora_dir), False) and loaded.variant.label == "adapter lora"
    from pytest_mmlu.models.content import ContentHashes

    assert loaded.adapter == {
        "path": str(lora_dir),
        "type": "LORA",
        "base_model": str(tiny_model_dir),
        "r": 4,
        "sha256": ContentHashes().folder(lora_dir).removeprefix("sha256:"),
        "merged": False,
    }
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora_dir).eval()
    base = load_model(Settings(model=str(tiny_model_dir), device="cpu"))
    assert (logits(loaded.model) - logits(reference)).abs().max() == 0
    assert (logits(loaded.model) - logits(base.model)).abs().max() > 0.1  # the adapter does something
    assert type(loaded.model).__name__ == "LlamaForCausalLM"  # the engine scores the model itself
    assert variant_lines(settings) == [f"mmlu: adapter {lora_dir}"]


def test_a_merged_adapter_is_the_same_model_up_to_rounding(tiny_model_dir, lora_dir):
    import torch

    unmerged = load_model(Settings(model=str(tiny_model_dir), device="cpu", adapter=str(lora_dir)))
    merged = load_model(Settings(model=str(tiny_model_dir), device="cpu", adapter=str(lora_dir), merge_adapter=True))
    assert merged.adapter["merged"] and merged.variant.label == "adapter lora (merged)"
    assert not any("lora" in name for name, _ in merged.model.named_parameters())
    assert torch.allclose(logits(merged.model), logits(unmerged.model), atol=1e-5)
    assert merged.weight_bytes < unmerged.weight_bytes  # the adapter's matrices are gone


def test_the_engine_scores_an_adapted_model_exactly(tiny_model_dir, lora_dir, mmlu_csv_dir):
    from truth import truth_loglikelihoods

    from pytest_mmlu.marks import make_eval_spec
    from pytest_mmlu.mmlu.data import MmluData
    from pytest_mmlu.mmlu.evaluation import Evaluator

    loaded = load_model(Settings(model=str(tiny_model_dir), device="cpu", adapter=str(lora_dir)))
    evaluator = Evaluator(loaded, MmluData(str(mmlu_csv_dir)))
    spec = make_eval_spec(["anatomy", "virology"], 5, 3)
    requests, _ = evaluator.requests(spec)
    result = evaluator.evaluate(spec)
    assert result.engine_mode == "prefix" and result.variant == "adapter lora"
    ours = [ll for q in result.questions for ll in q.loglikelihoods]
    truth = truth_loglikelihoods(loaded.model, requests, evaluator.max_length)
    assert max(abs(a - b) for a, b in zip(ours, truth)) <= 1e-4


def test_a_prompt_learning_adapter_is_refused_in_one_line(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    folder = tmp_path / "prefix"
    peft.get_peft_model(base, peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)).save_pretrained(
        folder
    )
    with pytest.raises(ModelLoadError) as info:
        load_model(Settings(model=str(tiny_model_dir), device="cpu", adapter=str(folder)))
    assert str(info.value) == (
        f"adapter {folder} is PREFIX_TUNING, a prompt-learning adapter (virtual tokens added by PEFT's own "
        f"forward): pytest-mmlu scores adapters that change the model's layers (LoRA, IA3, ...)"
    )


def test_an_adapter_for_another_architecture_is_one_line(lora_dir, tmp_path):
    from factories import save_model_folder

    gpt2 = save_model_folder(tmp_path / "gpt2", "gpt2")  # no q_proj/v_proj/up_proj/down_proj
    with pytest.raises(ModelLoadError) as info:
        load_model(Settings(model=str(gpt2), device="cpu", adapter=str(lora_dir)))
    message = str(info.value)
    assert message.startswith(f"cannot apply adapter {lora_dir}: ") and "\n" not in message


def test_missing_peft_names_the_extra(tiny_model_dir, lora_dir, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_peft(name, *args, **kwargs):
        if name == "peft" or name.startswith("peft."):
            raise ImportError("No module named 'peft'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_peft)
    with pytest.raises(ModelLoadError) as info:
        load_model(Settings(model=str(tiny_model_dir), device="cpu", adapter=str(lora_dir)))
    assert str(info.value) == "--mmlu-adapter needs peft, which is not installed: pip install 'pytest-mmlu[peft]'"


def test_applying_an_adapter_puts_no_third_party_deprecation_in_the_users_summary(tiny_model_dir, lora_dir):
    """peft reads transformers' deprecated is_gradient_checkpointing: without the filter every
    adapter run showed a FutureWarning about a property the user never touched."""
    import warnings

    from transformers import AutoModelForCausalLM

    from pytest_mmlu.models.adapters import apply_adapter

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        apply_adapter(model, str(lora_dir), merge=False)
    assert not [w for w in seen if issubclass(w.category, (FutureWarning, DeprecationWarning))], [
        str(w.message) for w in seen
    ]
