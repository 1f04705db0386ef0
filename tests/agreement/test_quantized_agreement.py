"""A quantized model scores the same through our engine as through lm-eval's ``hf`` backend.

We load SmolLM2-135M-Instruct with ``--mmlu-quantization int8`` (torchao int8 weight-only,
per-row scales) and save it: a pre-quantized torchao checkpoint. lm-eval's ``hf`` backend
loads that folder its own way (it reads the checkpoint's ``quantization_config``; its
``quantization_config=`` argument collides with its own in lm-eval 0.4.13), and so do we.
Quantization is deterministic, so all three hold the same weights; what differs is only how
rows are batched (our shared prefixes and packed rows against lm-eval's padded batches).
"""

from __future__ import annotations

import pytest
from factories import real_mmlu_zip, run_lm_eval

pytest.importorskip("torchao", reason="needs the quant extra: pip install 'pytest-mmlu[quant]'")
pytestmark = pytest.mark.slow
# Short prompts (CI time): int8 layers do not care how long the context is, and the engine's
# long shared prefixes are held to lm-eval in float32 by test_lm_eval_agreement.py.
SUBJECTS, LIMIT = ["abstract_algebra", "college_medicine"], 3


@pytest.mark.filterwarnings("ignore:You passed .quantization_config.:UserWarning")  # lm-eval's hf passes its own
def test_int8_smollm2_agrees_with_lm_eval_hf_on_the_same_quantized_model(smollm2_dir, tmp_path):  # noqa: F811
    from lm_eval.models.huggingface import HFLM

    from pytest_mmlu.marks import make_eval_spec
    from pytest_mmlu.mmlu.data import MmluData
    from pytest_mmlu.mmlu.evaluation import Evaluator
    from pytest_mmlu.mmlu.results import predict
    from pytest_mmlu.models.load import load_model
    from pytest_mmlu.models.quantization import plain_tensors
    from pytest_mmlu.models.variants import Variant
    from pytest_mmlu.settings import Settings

    data = MmluData(str(real_mmlu_zip()))
    loaded = load_model(Settings(model=str(smollm2_dir), device="cpu"), Variant("int8"))
    assert type(loaded.model.model.layers[0].mlp.up_proj.weight).__name__ == "Int8Tensor"
    ours_result = Evaluator(loaded, data).evaluate(make_eval_spec(SUBJECTS, 5, LIMIT))
    assert ours_result.engine_mode == "prefix"  # the shared-prefix path, not the fallback
    ours = {(q.subject, q.index): list(q.loglikelihoods) for q in ours_result.questions}

    saved = tmp_path / "smollm2-int8"
    loaded.model.save_pretrained(saved)
    loaded.tokenizer.save_pretrained(saved)
    theirs = run_lm_eval(
        HFLM(pretrained=str(saved), dtype="float32", batch_size=4, device="cpu"), data, SUBJECTS, LIMIT
    )
    reloaded = load_model(Settings(model=str(saved), device="cpu"))  # as lm-eval loaded it
    assert reloaded.quantization["pre_quantized"] and reloaded.weight_bytes == loaded.weight_bytes
    for (name, mine), (_, saved_param) in zip(loaded.model.named_parameters(), reloaded.model.named_parameters()):
        assert all(a.equal(b) for a, b in zip(plain_tensors(mine), plain_tensors(saved_param))), name

    assert ours.keys() == theirs.keys() and len(theirs) == len(SUBJECTS) * LIMIT
    worst = max(abs(a - b) for key in theirs for a, b in zip(ours[key], theirs[key]))
    print(f"int8 SmolLM2, ours vs lm-eval hf: max |delta| {worst:.2e} over {len(theirs)} questions")
    assert worst <= 1e-3, worst
    for key in theirs:
        assert predict(ours[key]) == predict(theirs[key]), key
