"""Release gates: turn a result and a test's markers into failure lines."""

from __future__ import annotations

from .markers import Floor
from .results import Accuracy, EvaluationResult
from .sizes import format_gib


def budget_breach(result: EvaluationResult) -> str | None:
    if result.budget_bytes is None or result.peak_memory_bytes <= result.budget_bytes:
        return None
    return (
        f"MMLU memory budget exceeded: peak {format_gib(result.peak_memory_bytes)} > budget "
        f"{format_gib(result.budget_bytes)} on {result.device} (weights "
        f"{format_gib(result.weight_bytes)}, batch {result.batch_size}, {result.shots}-shot)"
    )


def _floor_line(acc: Accuracy, floor: float, shots: int, what: str) -> str:
    lo, hi = acc.ci95
    return (f"MMLU accuracy {acc.accuracy:.3f} < floor {floor:.3f} (n={acc.n}, 95% CI "
            f"{lo:.3f}-{hi:.3f}; {shots}-shot, {what})")


def floor_breaches(result: EvaluationResult, floor: Floor | None) -> list[str]:
    if floor is None:
        return []
    lines = []
    overall = Accuracy(result.correct, result.n)
    if floor.overall is not None and overall.accuracy < floor.overall:
        lines.append(_floor_line(overall, floor.overall, result.shots, result.label))
    per_subject = result.per_subject
    for subject, minimum in floor.per_subject.items():
        acc = per_subject.get(subject)
        if acc is None:
            continue  # this evaluation did not cover the subject
        if acc.accuracy < minimum:
            lines.append(_floor_line(acc, minimum, result.shots, subject))
    return lines


def floor_uncovered(results: list[EvaluationResult], floor: Floor | None) -> list[str]:
    """Per-subject floors that no evaluation of the test covered: a misconfigured gate."""
    if floor is None or not results:
        return []
    covered = {s for r in results for s in r.subjects}
    return [
        f"MMLU accuracy floor for {s!r} cannot be checked: no evaluation of this test covers it"
        for s in floor.per_subject if s not in covered
    ]


def model_required(n_tests: int, source: str) -> str:
    """The usage error of a run that must not pass by skipping its gates (CI without a model)."""
    return (f"pytest-mmlu: {n_tests} MMLU test(s) collected but no model given, and a model is "
            f"required (--mmlu-require-model, from {source}): pass --mmlu-model=ORG/NAME or a "
            f"local folder, or set PYTEST_MMLU_MODEL; --mmlu-allow-skip lets them skip")


def skipped_without_model(n_tests: int) -> str:
    """Summary line: skipped gates are counted, never silently green."""
    return f"pytest-mmlu: {n_tests} MMLU test(s) skipped: no model (pass --mmlu-model)"


def output_not_written(what: str, path: str, why: str) -> str:
    return f"pytest-mmlu: {what} NOT written to {path}: {why}"
