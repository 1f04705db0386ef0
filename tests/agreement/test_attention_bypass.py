"""A model whose own code computes attention is detected and scored in plain batches, never
without its prefix (issue 9): same answers as lm-eval's hf backend and the float64 truth,
whether its attention takes the padding mask or ignores it (plain batches are padded on the
right, as lm-eval's: no real token ever sees a pad, so a causal model needs no mask)."""

from __future__ import annotations

import pytest
from factories import AGREEMENT_LIMIT as LIMIT
from factories import AGREEMENT_SUBJECTS as SUBJECTS
from factories import run_lm_eval, save_remote_code_model
from truth import truth_loglikelihoods

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=[True, False], ids=["takes-the-mask", "ignores-the-mask"])
def remote_code_dir(tmp_path_factory, request):
    return save_remote_code_model(tmp_path_factory.mktemp("models") / "own-attention", use_mask=request.param)


def test_attention_bypass_falls_back_to_plain_batches(remote_code_dir, mmlu_csv_dir):
    from lm_eval.models.huggingface import HFLM

    from pytest_mmlu.marks import make_eval_spec
    from pytest_mmlu.mmlu.data import MmluData
    from pytest_mmlu.mmlu.evaluation import Evaluator
    from pytest_mmlu.mmlu.results import predict
    from pytest_mmlu.models.load import load_model
    from pytest_mmlu.settings import Settings

    data = MmluData(str(mmlu_csv_dir))
    theirs = run_lm_eval(
        HFLM(pretrained=str(remote_code_dir), dtype="float32", batch_size=4, device="cpu", trust_remote_code=True), data
    )
    evaluator = Evaluator(load_model(Settings(model=str(remote_code_dir), trust_remote_code=True)), data)
    spec = make_eval_spec(SUBJECTS, 5, LIMIT)
    result = evaluator.evaluate(spec)
    assert type(evaluator.loaded.model).__name__ == "OwnAttentionForCausalLM"
    ours = {(q.subject, q.index): list(q.loglikelihoods) for q in result.questions}
    assert ours.keys() == theirs.keys()
    for key in theirs:
        assert predict(ours[key]) == predict(theirs[key]), key
        assert max(abs(a - b) for a, b in zip(ours[key], theirs[key])) <= 1e-4, key
    requests, _ = evaluator.requests(spec)
    truth = truth_loglikelihoods(evaluator.loaded.model, requests, evaluator.max_length)
    flat = [ll for q in result.questions for ll in q.loglikelihoods]
    assert max(abs(a - b) for a, b in zip(flat, truth)) <= 1e-4
    assert result.engine_mode == "plain" and max(result.batch_sizes) > 1  # rows of several lengths padded
