"""The evaluator on a tiny model: what it measures."""

from __future__ import annotations

import time


def test_evaluation_seconds_include_building_the_requests(tiny_model_dir, mmlu_csv_dir, monkeypatch):
    from pytest_mmlu.marks import make_eval_spec
    from pytest_mmlu.mmlu.data import MmluData
    from pytest_mmlu.mmlu.evaluation import Evaluator
    from pytest_mmlu.models.load import load_model
    from pytest_mmlu.settings import Settings

    evaluator = Evaluator(load_model(Settings(model=str(tiny_model_dir))), MmluData(str(mmlu_csv_dir)))
    build = evaluator.builder.build

    def slow_build(groups):
        time.sleep(0.5)
        return build(groups)

    monkeypatch.setattr(evaluator.builder, "build", slow_build)
    result = evaluator.evaluate(make_eval_spec(["anatomy"], 5, 2))
    assert result.seconds >= 0.5
