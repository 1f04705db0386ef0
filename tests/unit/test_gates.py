"""The one judge of gates.py: pure functions of records (declared gates, evaluation entries,
outcome) and a baseline -> Verdicts, every line exact."""

from __future__ import annotations

import dataclasses
import math

import pytest
from factories import made_up_identity

from pytest_mmlu import gates, judge, regression
from pytest_mmlu.gates import Verdict
from pytest_mmlu.markers import EvalSpec, Floor, ItemMarks, NoRegression
from pytest_mmlu.mmlu.results import EvaluationResult, QuestionResult, predict, wilson_interval
from pytest_mmlu.outputs.github import github_summary
from pytest_mmlu.outputs.summary import summary_lines
from pytest_mmlu.reports.baseline import Baseline

GiB = 2**30


def result(correct_by_subject, peak=GiB, budget=None, dtype="bfloat16"):
    questions = []
    for subject, (correct, n) in correct_by_subject.items():
        for i in range(n):
            questions.append(QuestionResult(subject, i, 0, 0 if i < correct else 1, (0.0, -1.0, -2.0, -3.0)))
    return EvaluationResult(
        tuple(correct_by_subject),
        5,
        None,
        "stem",
        questions,
        peak,
        budget,
        16,
        [16],
        1.0,
        100,
        "cuda:0",
        dtype,
        weight_bytes=int(2.1 * GiB),
    )


def test_budget_breach_line():
    r = result({"anatomy": (5, 10)}, peak=int(7.31 * GiB), budget=6 * GiB)
    assert gates.budget(r).line == (
        "MMLU memory budget exceeded: peak 7.31 GiB > budget 6.00 GiB on cuda:0 (weights 2.10 GiB, batch 16, 5-shot)"
    )
    assert gates.budget(r).kind == "budget" and gates.budget(r).fails
    assert gates.budget(result({"anatomy": (5, 10)}, peak=6 * GiB, budget=6 * GiB)) is None


def test_floor_lines_overall_and_per_subject():
    r = result({"anatomy": (300, 400), "virology": (10, 100)})
    lines = [v.line for v in gates.floors(r, Floor(0.70, {"virology": 0.2, "anatomy": 0.5}))]
    assert lines == [
        "MMLU accuracy 0.620 < floor 0.700 (n=500, 95% CI 0.577-0.661; 5-shot, stem)",
        "MMLU accuracy 0.100 < floor 0.200 (n=100, 95% CI 0.055-0.174; 5-shot, virology)",
    ]
    assert gates.floors(r, Floor(0.62)) == []


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(50, 100)
    assert round(lo, 4) == 0.4038 and round(hi, 4) == 0.5962
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_chart_handles_zero_and_full_accuracy(tmp_path):
    from pytest_mmlu.outputs.chart import write_chart

    ev = result({"anatomy": (0, 10), "virology": (10, 10)}).to_dict()
    ev["floor"] = {"min": 0.5, "per_subject": {}}
    write_chart(str(tmp_path / "c.png"), [{"nodeid": "t", "evaluations": [ev]}])
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


# -- non-finite scores ------------------------------------------------------------------------
def with_scores(r, bad):
    """``r`` with the log-likelihoods of the questions at ``bad`` (position -> value) replaced."""
    questions = [
        dataclasses.replace(q, loglikelihoods=(bad[i], -1.0, -2.0, -3.0)) if i in bad else q
        for i, q in enumerate(r.questions)
    ]
    return dataclasses.replace(r, questions=questions)


def test_non_finite_line_names_questions_dtype_and_device():
    r = with_scores(
        result({"anatomy": (10, 20), "virology": (5, 10)}, dtype="float16"), {3: math.nan, 7: math.nan, 21: math.nan}
    )
    v = gates.non_finite(r)
    assert v.line == (
        "MMLU scores are not finite (NaN) for 3 of 30 questions: anatomy#3, anatomy#7, "
        "virology#1 (dtype float16, device cuda:0)"
    )
    assert v.kind == "non-finite" and v.fails
    assert v.detail["questions"] == ["anatomy#3", "anatomy#7", "virology#1"]
    assert gates.non_finite(result({"anatomy": (10, 20)})) is None


@pytest.mark.parametrize(
    "values,word", [((math.inf,), "inf"), ((-math.inf,), "inf"), ((math.nan, math.inf), "NaN/inf")]
)
def test_non_finite_says_which_values(values, word):
    r = with_scores(result({"anatomy": (5, 10)}), dict(enumerate(values)))
    assert gates.non_finite(r).line.startswith(
        f"MMLU scores are not finite ({word}) for {len(values)} of 10 questions: "
    )


def test_non_finite_lists_at_most_five_questions():
    r = with_scores(result({"anatomy": (5, 10)}), {i: math.nan for i in range(7)})
    assert gates.non_finite(r).line == (
        "MMLU scores are not finite (NaN) for 7 of 10 questions: anatomy#0, anatomy#1, anatomy#2, "
        "anatomy#3, anatomy#4, ... (dtype bfloat16, device cuda:0)"
    )


def identity_of(r, quantization="none"):
    """An identity as a run records it (model, software and device made up, the same for all)."""
    return made_up_identity(
        [(q.subject, q.index) for q in r.questions], r.shots, quantization=quantization, dtype=r.dtype
    )


ANATOMY = ItemMarks(spec=EvalSpec(("anatomy",)))


def record(*results, marks=ANATOMY, nodeid="t.py::test_a", outcome="passed"):
    """A test's record holding ``results`` (a result, or (result, role) for a reference)."""
    entries = []
    for r in results:
        r, role = r if isinstance(r, tuple) else (r, None)
        quantization = "none" if r.variant == "full" else r.variant
        entries.append({**r.to_dict(), "identity": identity_of(r, quantization), **({"role": role} if role else {})})
    return {"nodeid": nodeid, "outcome": outcome, "gates": marks.to_dict(), "evaluations": entries}


def test_a_non_finite_result_is_judged_by_nothing_else():
    # A NaN accuracy is no accuracy: a floor or a baseline would judge garbage.
    r = with_scores(result({"anatomy": (0, 10)}), {0: math.nan})
    marks = ItemMarks(spec=EvalSpec(("anatomy",)), floor=Floor(0.9), no_regressions=(NoRegression(),))
    judged = judge.judge_record(record(r, marks=marks), Baseline(None, None))
    assert [v.kind for v in judged.evaluations[0]] == ["non-finite"] and judged.test == ()


@pytest.mark.parametrize(
    "lls",
    [
        (math.nan, -1.0, -2.0, -3.0),
        (-1.0, math.nan, -2.0, -3.0),
        (-1.0, math.inf, -2.0, -3.0),
        (-math.inf, -1.0, -2.0, -3.0),
    ],
)
def test_predict_refuses_non_finite_scores(lls):
    # ``>`` is false against NaN: a NaN row used to answer A without a word.
    with pytest.raises(ValueError, match="non-finite"):
        predict(lls)
    assert predict((-2.0, -1.0, -1.0, -3.0)) == 1  # first on ties, as numpy's argmax


def test_a_question_with_non_finite_scores_has_no_answer():
    from pytest_mmlu.mmlu.results import NO_ANSWER

    q = QuestionResult.scored("anatomy", 3, 0, (math.nan, -1.0, -2.0, -3.0))
    assert (q.prediction, q.correct, q.finite) == (NO_ANSWER, False, False)
    assert QuestionResult.scored("anatomy", 3, 1, (-2.0, -1.0, -1.0, -3.0)).prediction == 1


# -- judge and the other verdicts -------------------------------------------------------------
def test_judge_orders_budget_floors_then_regression():
    r = result({"anatomy": (2, 10)}, peak=2 * GiB, budget=GiB)
    marks = ItemMarks(spec=EvalSpec(("anatomy",)), budget_bytes=GiB, floor=Floor(0.5), no_regressions=(NoRegression(),))
    judged = judge.judge_record(record(r, marks=marks), Baseline(None, "b.json"))
    assert [v.kind for v in judged.evaluations[0]] == ["budget", "floor", "missing-baseline"]
    assert judge.judge_record(record(result({"anatomy": (9, 10)}))).failing == []


def test_every_no_regression_mark_is_its_own_gate():
    """Two rules against the baseline (module and function): each is judged; a drop of 0.1 on
    40 questions is within max_drop 0.2 (the module's) but not 0.05 (the function's)."""
    base = result({"anatomy": (40, 40)})
    new = result({"anatomy": (36, 40)})
    baseline = Baseline({"tests": [record(base)]}, "b.json")
    marks = ItemMarks(spec=EvalSpec(("anatomy",)), no_regressions=(NoRegression(0.2, 0.5), NoRegression(0.05, 0.5)))
    (verdicts,) = judge.judge_record(record(new, marks=marks), baseline).evaluations
    assert [v.kind for v in verdicts] == ["unchanged", "regression"]
    applied = judge.apply(record(new, marks=marks), judge.judge_record(record(new, marks=marks), baseline))
    (entry,) = applied["evaluations"]
    assert [r["verdict"] for r in entry["regressions"]] == ["unchanged", "regressed"]
    assert entry["breaches"] == [verdicts[1].line]
    # Every output shows both gates, not the first alone.
    markdown = github_summary([applied])
    assert "-0.100 (unchanged)" in markdown and "-0.100 (regressed)" in markdown
    seen = [line for line in summary_lines([applied]) if line.startswith("  test_a: 1.000 -> 0.900")]
    assert len(seen) == 2


def test_the_github_summary_says_a_test_failed_where_its_gates_held():
    """An assert in the body failed the test (and the job): its row is no green tick."""
    held = judge.apply(record(result({"anatomy": (40, 40)})), judge.judge_record(record(result({"anatomy": (40, 40)}))))
    assert "✅ ok" in github_summary([held])
    assert "❌ gates held, the test failed" in github_summary([{**held, "outcome": "failed"}])


def test_a_gate_against_full_precision_compares_with_the_reference_recorded_beside_it():
    marks = ItemMarks(spec=EvalSpec(("anatomy",)), no_regressions=(NoRegression(0.02, 0.05, "full"),))
    variant = dataclasses.replace(result({"anatomy": (2, 40)}), variant="int8")
    full = result({"anatomy": (40, 40)})
    (verdicts,) = [v for v in judge.judge_record(record((full, "reference"), variant, marks=marks)).evaluations if v]
    assert [v.kind for v in verdicts] == ["regression"]
    assert verdicts[0].line.startswith("MMLU regression of int8 vs full precision: 1.000 -> 0.050")
    # No reference in the record (a report whose shards never evaluated it): missing, never a pass.
    (verdict,) = judge.judge_record(record(variant, marks=marks)).evaluations[0]
    assert verdict.line == (
        "MMLU no-regression against full precision: the full-precision evaluation of stem, 5-shot did not run"
    )
    # A reference with NaN scores is no reference.
    nan = with_scores(full, {0: math.nan})
    (verdict,) = [v for v in judge.judge_record(record((nan, "reference"), variant, marks=marks)).evaluations if v][0]
    assert verdict.kind == "non-finite" and verdict.line.startswith(
        "MMLU full-precision reference scores are not finite"
    )


@pytest.mark.parametrize(
    "outcome,cause",
    [
        ("failed", "the test failed before it evaluated"),
        ("error", "the test errored before it evaluated"),
        ("crashed", "its worker crashed"),
        ("not run", "the test did not run"),
    ],
)
def test_a_gate_never_evaluated_fails_saying_why(outcome, cause):
    marks = ItemMarks(spec=EvalSpec(("anatomy",), 0, 3, "anatomy"), floor=Floor(0.5))
    (verdict,) = judge.judge_record(record(marks=marks, outcome=outcome)).test
    assert verdict.kind == "never-evaluated" and verdict.fails
    assert verdict.line == (
        f"pytest-mmlu: MMLU evaluation anatomy 0-shot limit 3, accuracy floor 0.500 declared, never evaluated: {cause}"
    )
    (skipped,) = judge.judge_record(record(marks=marks, outcome="skipped")).test
    assert skipped.kind == "skipped" and not skipped.fails


def test_verdicts_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Verdict("floor", "x").line = "y"


def test_floor_uncovered_names_the_subject():
    (v,) = gates.floor_uncovered([["anatomy"]], Floor(None, {"virology": 0.5}))
    assert v.line == "MMLU accuracy floor for 'virology' cannot be checked: no evaluation of this test covers it"
    assert v.kind == "floor"
    assert gates.floor_uncovered([], Floor(None, {"virology": 0.5})) == []


def test_errors_of_evaluations_that_could_not_run():
    from pytest_mmlu.mmlu.data import DataError
    from pytest_mmlu.models.errors import ModelLoadError

    assert gates.error(DataError("a.csv:1: bad")) == Verdict("error", "pytest-mmlu: MMLU data error: a.csv:1: bad")
    assert gates.error(ModelLoadError("cannot load model 'x'")).line == "pytest-mmlu: cannot load model 'x'"


# -- regression against a baseline ------------------------------------------------------------
def entry(right, fingerprint="f", label="anatomy"):
    """A report entry: question i is right where right[i]."""
    n = len(right)
    return {
        "subjects": ["anatomy"],
        "label": label,
        "shots": 0,
        "limit": n,
        "n": n,
        "data_fingerprint": fingerprint,
        "per_subject": {"anatomy": {"accuracy": sum(right) / n, "n": n}},
        "questions": [
            {"subject": "anatomy", "index": i, "target": 0, "prediction": 0 if ok else 1, "loglikelihoods": [0.0] * 4}
            for i, ok in enumerate(right)
        ],
    }


def baseline_of(ev, nodeid="t.py::test_a"):
    return Baseline({"schema": 1, "tests": [{"nodeid": nodeid, "evaluations": [ev]}]}, "b.json")


RULE = NoRegression(max_drop=0.02, alpha=0.05)
HOW = "create or refresh it with --mmlu-baseline PATH --mmlu-update-baseline"


def test_regression_line_and_report_entry():
    v = regression.regression("t.py::test_a", entry([False] * 20 + [True] * 20), RULE, baseline_of(entry([True] * 40)))
    assert v.kind == "regression" and v.fails
    assert v.line == "MMLU regression vs baseline: 1.000 -> 0.500 (n=40; 20 lost, 0 gained; McNemar p=0.000 < 0.05)"
    assert v.detail["verdict"] == "regressed" and v.detail["line"] == v.line
    assert (v.detail["lost"], v.detail["gained"], v.detail["base_per_subject"]) == (20, 0, {"anatomy": 1.0})


def test_improvement_is_a_note_and_no_change_passes():
    better = regression.regression(
        "t.py::test_a", entry([True] * 40), RULE, baseline_of(entry([False] * 20 + [True] * 20))
    )
    assert better.kind == "improved" and not better.fails
    assert better.line.startswith("MMLU improved significantly vs baseline (baseline is stale): 0.500 -> 1.000")
    same = regression.regression("t.py::test_a", entry([True] * 40), RULE, baseline_of(entry([True] * 40)))
    assert (same.kind, same.fails, same.detail["verdict"], same.detail["line"]) == (
        "unchanged",
        False,
        "unchanged",
        None,
    )


@pytest.mark.parametrize(
    "case,line",
    [
        ("no path", f"@pytest.mark.mmlu_no_regression needs --mmlu-baseline PATH; {HOW}"),
        ("no file", f"MMLU baseline b.json does not exist; {HOW}"),
        ("no entry", f"MMLU baseline b.json has no entry for t.py::test_a (anatomy, 0-shot, limit 4); {HOW}"),
        (
            "other data",
            f"MMLU baseline entry for t.py::test_a (anatomy, 0-shot, limit 4) was made on other data "
            f"(fingerprint differs); {HOW}",
        ),
        (
            "other questions",
            f"MMLU baseline entry for t.py::test_a (anatomy, 0-shot, limit 4) covers other questions; {HOW}",
        ),
    ],
)
def test_a_baseline_that_cannot_answer_fails(case, line):
    ev = entry([True] * 4)
    other_questions = entry([True] * 4)
    other_questions["questions"][0]["index"] = 99
    baseline = {
        "no path": Baseline(None, None),
        "no file": Baseline(None, "b.json"),
        "no entry": baseline_of(ev, "t.py::test_other"),
        "other data": baseline_of(entry([True] * 4, "g")),
        "other questions": baseline_of(other_questions),
    }[case]
    v = regression.regression("t.py::test_a", ev, RULE, baseline)
    assert (v.kind, v.line, dict(v.detail)) == ("missing-baseline", line, {"verdict": "missing", "line": line})


def test_a_run_that_records_the_baseline_is_not_compared():
    v = regression.regression("t.py::test_a", entry([True] * 4), RULE, Baseline(None, "b.json", recording=True))
    assert (v.kind, v.fails, dict(v.detail)) == ("recorded", False, {"verdict": "recorded", "line": None})
