from __future__ import annotations

from pytest_mmlu.gates import budget_breach, floor_breaches
from pytest_mmlu.markers import Floor
from pytest_mmlu.results import EvaluationResult, QuestionResult, wilson_interval

GiB = 2**30


def result(correct_by_subject, peak=GiB, budget=None):
    questions = []
    for subject, (correct, n) in correct_by_subject.items():
        for i in range(n):
            questions.append(QuestionResult(subject, i, 0, 0 if i < correct else 1, (0.0, -1.0, -2.0, -3.0)))
    return EvaluationResult(tuple(correct_by_subject), 5, None, "stem", questions, peak, budget, 16, [16],
                            1.0, 100, "cuda:0", "bfloat16", weight_bytes=int(2.1 * GiB))


def test_budget_breach_line():
    r = result({"anatomy": (5, 10)}, peak=int(7.31 * GiB), budget=6 * GiB)
    assert budget_breach(r) == ("MMLU memory budget exceeded: peak 7.31 GiB > budget 6.00 GiB on cuda:0 "
                                "(weights 2.10 GiB, batch 16, 5-shot)")
    assert budget_breach(result({"anatomy": (5, 10)}, peak=6 * GiB, budget=6 * GiB)) is None


def test_floor_lines_overall_and_per_subject():
    r = result({"anatomy": (300, 400), "virology": (10, 100)})
    lines = floor_breaches(r, Floor(0.70, {"virology": 0.2, "anatomy": 0.5}))
    assert lines == [
        "MMLU accuracy 0.620 < floor 0.700 (n=500, 95% CI 0.577-0.661; 5-shot, stem)",
        "MMLU accuracy 0.100 < floor 0.200 (n=100, 95% CI 0.055-0.174; 5-shot, virology)",
    ]
    assert floor_breaches(r, Floor(0.62)) == []


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(50, 100)
    assert round(lo, 4) == 0.4038 and round(hi, 4) == 0.5962
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_chart_handles_zero_and_full_accuracy(tmp_path):
    from pytest_mmlu.reports import write_chart

    ev = result({"anatomy": (0, 10), "virology": (10, 10)}).to_dict()
    ev["floor"] = {"min": 0.5, "per_subject": {}}
    write_chart(str(tmp_path / "c.png"), [{"nodeid": "t", "evaluations": [ev]}])
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
