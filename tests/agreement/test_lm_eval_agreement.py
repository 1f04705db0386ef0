"""Same questions, same model: lm-eval's own HF backend and pytest-mmlu must agree.

lm-eval builds its tasks from its own YAML definitions (lm_eval/tasks/mmlu/default),
with the dataset served from the real MMLU zip instead of the hub.
"""

from __future__ import annotations

import pytest
from factories import AGREEMENT_LIMIT as LIMIT
from factories import AGREEMENT_SUBJECTS as SUBJECTS
from factories import real_mmlu_zip, run_lm_eval

pytestmark = pytest.mark.slow


def test_plugin_and_lm_eval_adapter_agree_with_lm_eval_hf(smollm2_dir):
    from lm_eval.models.huggingface import HFLM

    from pytest_mmlu.lm_eval_adapter import PytestMmluLM
    from pytest_mmlu.marks import make_eval_spec
    from pytest_mmlu.mmlu.data import MmluData
    from pytest_mmlu.mmlu.evaluation import Evaluator
    from pytest_mmlu.mmlu.results import predict
    from pytest_mmlu.models.load import load_model
    from pytest_mmlu.settings import Settings

    data = MmluData(str(real_mmlu_zip()))
    theirs = run_lm_eval(HFLM(pretrained=str(smollm2_dir), dtype="float32", batch_size=4, device="cpu"), data)
    assert len(theirs) == len(SUBJECTS) * LIMIT

    result = Evaluator(load_model(Settings(model=str(smollm2_dir))), data).evaluate(make_eval_spec(SUBJECTS, 5, LIMIT))
    ours = {(q.subject, q.index): list(q.loglikelihoods) for q in result.questions}
    assert ours.keys() == theirs.keys()
    for key in theirs:
        assert predict(ours[key]) == predict(theirs[key]), key
        assert max(abs(a - b) for a, b in zip(ours[key], theirs[key])) <= 1e-4, key

    adapter = run_lm_eval(PytestMmluLM(pretrained=str(smollm2_dir), batch_size=4), data)
    for key in theirs:
        assert max(abs(a - b) for a, b in zip(adapter[key], theirs[key])) <= 1e-4, key


def test_agreement_with_a_bos_adding_tokenizer(tiny_model_dir, mmlu_csv_dir):
    """Llama-style tokenizers prepend BOS: the context/continuation split must still match."""
    from lm_eval.models.huggingface import HFLM

    from pytest_mmlu.marks import make_eval_spec
    from pytest_mmlu.mmlu.data import MmluData
    from pytest_mmlu.mmlu.evaluation import Evaluator
    from pytest_mmlu.models.load import load_model
    from pytest_mmlu.settings import Settings

    data = MmluData(str(mmlu_csv_dir))
    theirs = run_lm_eval(HFLM(pretrained=str(tiny_model_dir), dtype="float32", batch_size=4, device="cpu"), data)
    result = Evaluator(load_model(Settings(model=str(tiny_model_dir))), data).evaluate(
        make_eval_spec(SUBJECTS, 5, LIMIT)
    )
    ours = {(q.subject, q.index): list(q.loglikelihoods) for q in result.questions}
    assert ours.keys() == theirs.keys()
    for key in theirs:
        assert max(abs(a - b) for a, b in zip(ours[key], theirs[key])) <= 1e-4, key
