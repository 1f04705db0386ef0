"""Release gates: the verdict of each gate on one evaluation, pure functions, and every line a
person reads about a gate (the no-regression gates' in ``regression.py``).

A ``Verdict`` is what one gate concluded: ``kind`` names the gate, ``line`` is the one line a
person reads, ``detail`` the figures behind it (JSON-able; the regression verdict's detail
is the report's ``regression`` entry). Only the kinds in ``FAILING`` fail a test;
"improved" is a note, "unchanged" and "recorded" pass, "skipped" is a test that skipped
(its gates are not judged, on every path), and "deferred" is a floor or no-regression gate
of a CI shard, judged by ``pytest-mmlu merge`` on the whole (a part cannot pass or fail a
floor on the whole). ``judge.py`` applies them to a test's record.
Nothing here reads pytest state, files or the session.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .markers import Floor, ItemMarks, TaskSpec
from .memory.errors import BudgetTooSmall, OutOfMemory
from .mmlu.data import DataError
from .mmlu.results import Accuracy, EvaluationResult, measure_text, shots_text
from .sizes import format_gib

FAILING = frozenset({"budget", "floor", "regression", "missing-baseline", "non-finite", "error", "never-evaluated"})


# What ``regression`` can conclude; its detail is the report's ``regression`` entry.
REGRESSION_KINDS = frozenset({"regression", "missing-baseline", "improved", "unchanged", "recorded"})


NON_FINITE_SHOWN = 5  # questions named in the non-finite line; the rest is "..."


@dataclass(frozen=True)
class Verdict:
    kind: str
    line: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fails(self) -> bool:
        return self.kind in FAILING

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "line": self.line}


OUTCOME_CAUSES = {
    "failed": "the test failed before it evaluated",
    "error": "the test errored before it evaluated",
    "crashed": "its worker crashed",
    "not run": "the test did not run",
}


def declared_words(marks: ItemMarks) -> str:
    """The gates a test declares, in words: ``MMLU evaluation anatomy 5-shot, accuracy floor 0.500``."""
    parts = []
    if marks.spec is not None:
        spec = marks.spec
        limit = "" if spec.limit is None else f" limit {spec.limit}"
        kind = "lm-eval task" if isinstance(spec, TaskSpec) else "MMLU"
        parts.append(f"{kind} evaluation {spec.label or ','.join(spec.subjects)} {shots_text(spec.shots)}{limit}")
    if marks.budget_bytes is not None:
        parts.append(f"memory budget {format_gib(marks.budget_bytes)}")
    if marks.floor is not None:
        parts.append(
            "accuracy floor"
            + ("" if marks.floor.overall is None else f" {marks.floor.overall:.3f}")
            + ("" if not marks.floor.per_subject else f" (+{len(marks.floor.per_subject)} per subject)")
        )
    for rule in marks.no_regressions:
        parts.append(f"no-regression against {rule.against}")
    return ", ".join(parts) if parts else "MMLU gates"


# -- the gates ---------------------------------------------------------------------------------
DEFERRED_GATES = (("floor", "accuracy floor"), ("no_regression", "no-regression"))


def deferred(marks: ItemMarks, shard: Any) -> list[Verdict]:
    """The gates a shard records but cannot judge: they need every shard's questions."""
    declared = {"floor": marks.floor is not None, "no_regression": bool(marks.no_regressions)}
    return [
        Verdict("deferred", f"MMLU {words} judged at merge (this is shard {shard})", {"gate": gate})
        for gate, words in DEFERRED_GATES
        if declared[gate]
    ]


def non_finite(result: EvaluationResult, what: str = "") -> Verdict | None:
    """An evaluation with NaN or inf scores has no answers: an error, never a prediction."""
    bad = result.non_finite_questions
    if not bad:
        return None
    values = [ll for q in bad for ll in (*q.loglikelihoods, *([] if q.score is None else [q.score]))]
    nan, inf = any(math.isnan(v) for v in values), any(math.isinf(v) for v in values)
    kind = "NaN/inf" if nan and inf else ("NaN" if nan else "inf")
    names = [f"{q.subject}#{q.index}" for q in bad]
    shown = ", ".join(names[:NON_FINITE_SHOWN]) + (", ..." if len(names) > NON_FINITE_SHOWN else "")
    return Verdict(
        "non-finite",
        (
            f"MMLU {what}scores are not finite ({kind}) for {len(bad)} of {result.n} questions: {shown} "
            f"(dtype {result.dtype}, device {result.device})"
        ),
        {"questions": names, "n": result.n, "values": kind},
    )


def budget(result: EvaluationResult) -> Verdict | None:
    if result.budget_bytes is None or result.peak_memory_bytes <= result.budget_bytes:
        return None
    return Verdict(
        "budget",
        (
            f"MMLU memory budget exceeded: peak {format_gib(result.peak_memory_bytes)} > budget "
            f"{format_gib(result.budget_bytes)} on {_peak_device(result)} (weights "
            f"{format_gib(result.weight_bytes)}, batch {result.batch_size}, {shots_text(result.shots)})"
        ),
        {"peak_bytes": result.peak_memory_bytes, "budget_bytes": result.budget_bytes},
    )


def _peak_device(result: EvaluationResult) -> str:
    """The device over budget; of a model spread over GPUs, the one whose peak was highest."""
    spread = getattr(result, "peak_device", None)
    return f"{spread} (model on {result.device})" if spread else result.device


def _floor(acc: Accuracy, minimum: float, result: EvaluationResult, what: str) -> Verdict:
    lo, hi = acc.ci95
    return Verdict(
        "floor",
        (
            f"{measure_text(result.task)} {acc.accuracy:.3f} < floor {minimum:.3f} (n={acc.n}, 95% CI "
            f"{lo:.3f}-{hi:.3f}; {shots_text(result.shots)}, {what})"
        ),
        {"what": what, "accuracy": acc.accuracy, "floor": minimum, "n": acc.n},
    )


def floors(result: EvaluationResult, floor: Floor | None) -> list[Verdict]:
    if floor is None:
        return []
    verdicts = []
    overall = result.overall
    if floor.overall is not None and overall.accuracy < floor.overall:
        verdicts.append(_floor(overall, floor.overall, result, result.label))
    per_subject = result.per_subject
    for subject, minimum in floor.per_subject.items():
        acc = per_subject.get(subject)
        if acc is not None and acc.accuracy < minimum:  # None: this evaluation did not cover it
            verdicts.append(_floor(acc, minimum, result, subject))
    return verdicts


def floor_uncovered(evaluated_subjects: Sequence[Sequence[str]], floor: Floor | None) -> list[Verdict]:
    """Per-subject floors that no evaluation of the test covered (by the subjects it asked for,
    whatever a shard held of them): a misconfigured gate."""
    if floor is None or not evaluated_subjects:
        return []
    covered = {s for subjects in evaluated_subjects for s in subjects}
    return [
        Verdict(
            "floor",
            f"MMLU accuracy floor for {s!r} cannot be checked: no evaluation of this test covers it",
            {"what": s},
        )
        for s in floor.per_subject
        if s not in covered
    ]


# -- evaluations that could not run, and misused gates ------------------------------------------
def error(exc: Exception) -> Verdict:
    """An evaluation that could not run: a budget below batch 1, a model or data error."""
    if isinstance(exc, (BudgetTooSmall, OutOfMemory)):
        return Verdict("budget", str(exc))
    prefix = "MMLU data error: " if isinstance(exc, DataError) else ""
    return Verdict("error", f"pytest-mmlu: {prefix}{exc}")


def model_not_loaded(why: str) -> Verdict:
    return Verdict("error", f"pytest-mmlu: {why}")


def no_evaluation() -> Verdict:
    return Verdict(
        "never-evaluated",
        "pytest-mmlu: this test declares MMLU gates but made no evaluation: "
        "add @pytest.mark.mmlu(subjects=...) or call mmlu.evaluate()",
    )


def no_mmlu_marker() -> Verdict:
    return Verdict(
        "error",
        "pytest-mmlu: the mmlu_result fixture needs @pytest.mark.mmlu(subjects=...) or "
        "@pytest.mark.lm_eval_task(name) on the test",
    )


def against_full_without_variant() -> Verdict:
    return Verdict(
        "error",
        "pytest-mmlu: mmlu_no_regression(against='full') compares a variant with "
        "the full-precision model, and this test evaluates the full model itself: "
        "name the variant with @pytest.mark.mmlu_variant(quantization=..., adapter=...)",
    )


def bad_variant(why: str) -> Verdict:
    return Verdict("error", f"pytest-mmlu: model variant: {why}")


def late_marks(names: list[str]) -> Verdict:
    shown = ", ".join(f"@pytest.mark.{name}" for name in names)
    return Verdict(
        "error",
        f"pytest-mmlu: {shown} applied while the test ran (request.applymarker): MMLU marks are read "
        "when tests are collected; declare it on the test, its class or its module",
    )


def bad_evaluate_call(why: str, method: str = "evaluate") -> Verdict:
    return Verdict("error", f"pytest-mmlu: mmlu.{method}(): {why}")


# -- run-level lines ----------------------------------------------------------------------------
def model_required(n_tests: int, source: str) -> str:
    """The usage error of a run that must not pass by skipping its gates (CI without a model)."""
    return (
        f"pytest-mmlu: {n_tests} MMLU test(s) collected but no model given, and a model is "
        f"required (--mmlu-require-model, from {source}): pass --mmlu-model=ORG/NAME or a "
        f"local folder, or set PYTEST_MMLU_MODEL; --mmlu-allow-skip lets them skip"
    )


def skipped_without_model(n_tests: int) -> str:
    """Summary line: skipped gates are counted, never silently green."""
    return f"pytest-mmlu: {n_tests} MMLU test(s) skipped: no model (pass --mmlu-model)"


def output_not_written(what: str, path: str, why: str) -> str:
    return f"pytest-mmlu: {what} NOT written to {path}: {why}"
