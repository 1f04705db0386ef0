"""Release gates: the verdict of each gate on one evaluation, pure functions. All failure text lives here.

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

from .identity import BASELINE, FULL, difference, of_entry
from .markers import Floor, ItemMarks, NoRegression
from .memory.errors import BudgetTooSmall, OutOfMemory
from .mmlu.data import DataError
from .mmlu.results import Accuracy, EvaluationResult, all_finite
from .power import POWER, detectable_drop
from .sizes import format_gib
from .stats import compare_paired

FAILING = frozenset({"budget", "floor", "regression", "missing-baseline", "non-finite", "error",
                     "never-evaluated"})


# What ``regression`` can conclude; its detail is the report's ``regression`` entry.
REGRESSION_KINDS = frozenset({"regression", "missing-baseline", "improved", "unchanged", "recorded"})


HOW_TO_CREATE = "create or refresh it with --mmlu-baseline PATH --mmlu-update-baseline"


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
        limit = "" if marks.spec.limit is None else f" limit {marks.spec.limit}"
        parts.append(f"MMLU evaluation {marks.spec.label or ','.join(marks.spec.subjects)} "
                     f"{marks.spec.shots}-shot{limit}")
    if marks.budget_bytes is not None:
        parts.append(f"memory budget {format_gib(marks.budget_bytes)}")
    if marks.floor is not None:
        parts.append("accuracy floor" + ("" if marks.floor.overall is None else f" {marks.floor.overall:.3f}")
                     + ("" if not marks.floor.per_subject else f" (+{len(marks.floor.per_subject)} per subject)"))
    for rule in marks.no_regressions:
        parts.append(f"no-regression against {rule.against}")
    return ", ".join(parts) if parts else "MMLU gates"


# -- the gates ---------------------------------------------------------------------------------
DEFERRED_GATES = (("floor", "accuracy floor"), ("no_regression", "no-regression"))


def deferred(marks: ItemMarks, shard: Any) -> list[Verdict]:
    """The gates a shard records but cannot judge: they need every shard's questions."""
    declared = {"floor": marks.floor is not None, "no_regression": bool(marks.no_regressions)}
    return [Verdict("deferred", f"MMLU {words} judged at merge (this is shard {shard})", {"gate": gate})
            for gate, words in DEFERRED_GATES if declared[gate]]


def non_finite(result: EvaluationResult, what: str = "") -> Verdict | None:
    """An evaluation with NaN or inf scores has no answers: an error, never a prediction."""
    bad = result.non_finite_questions
    if not bad:
        return None
    values = [ll for q in bad for ll in q.loglikelihoods]
    nan, inf = any(math.isnan(v) for v in values), any(math.isinf(v) for v in values)
    kind = "NaN/inf" if nan and inf else ("NaN" if nan else "inf")
    names = [f"{q.subject}#{q.index}" for q in bad]
    shown = ", ".join(names[:NON_FINITE_SHOWN]) + (", ..." if len(names) > NON_FINITE_SHOWN else "")
    return Verdict("non-finite", (
        f"MMLU {what}scores are not finite ({kind}) for {len(bad)} of {result.n} questions: {shown} "
        f"(dtype {result.dtype}, device {result.device})"),
        {"questions": names, "n": result.n, "values": kind})


def budget(result: EvaluationResult) -> Verdict | None:
    if result.budget_bytes is None or result.peak_memory_bytes <= result.budget_bytes:
        return None
    return Verdict("budget", (
        f"MMLU memory budget exceeded: peak {format_gib(result.peak_memory_bytes)} > budget "
        f"{format_gib(result.budget_bytes)} on {_peak_device(result)} (weights "
        f"{format_gib(result.weight_bytes)}, batch {result.batch_size}, {result.shots}-shot)"),
        {"peak_bytes": result.peak_memory_bytes, "budget_bytes": result.budget_bytes})


def _peak_device(result: EvaluationResult) -> str:
    """The device over budget; of a model spread over GPUs, the one whose peak was highest."""
    spread = getattr(result, "peak_device", None)
    return f"{spread} (model on {result.device})" if spread else result.device


def _floor(acc: Accuracy, minimum: float, shots: int, what: str) -> Verdict:
    lo, hi = acc.ci95
    return Verdict("floor", (
        f"MMLU accuracy {acc.accuracy:.3f} < floor {minimum:.3f} (n={acc.n}, 95% CI "
        f"{lo:.3f}-{hi:.3f}; {shots}-shot, {what})"),
        {"what": what, "accuracy": acc.accuracy, "floor": minimum, "n": acc.n})


def floors(result: EvaluationResult, floor: Floor | None) -> list[Verdict]:
    if floor is None:
        return []
    verdicts = []
    overall = Accuracy(result.correct, result.n)
    if floor.overall is not None and overall.accuracy < floor.overall:
        verdicts.append(_floor(overall, floor.overall, result.shots, result.label))
    per_subject = result.per_subject
    for subject, minimum in floor.per_subject.items():
        acc = per_subject.get(subject)
        if acc is not None and acc.accuracy < minimum:  # None: this evaluation did not cover it
            verdicts.append(_floor(acc, minimum, result.shots, subject))
    return verdicts


def floor_uncovered(evaluated_subjects: Sequence[Sequence[str]], floor: Floor | None) -> list[Verdict]:
    """Per-subject floors that no evaluation of the test covered (by the subjects it asked for,
    whatever a shard held of them): a misconfigured gate."""
    if floor is None or not evaluated_subjects:
        return []
    covered = {s for subjects in evaluated_subjects for s in subjects}
    return [Verdict("floor", f"MMLU accuracy floor for {s!r} cannot be checked: no evaluation of "
                             f"this test covers it", {"what": s})
            for s in floor.per_subject if s not in covered]


# -- regression against a baseline --------------------------------------------------------------
def describe(ev: Mapping[str, Any]) -> str:
    limit = "" if ev["limit"] is None else f", limit {ev['limit']}"
    return f"{ev.get('label') or ','.join(ev['subjects'])}, {ev['shots']}-shot{limit}"


def _missing(line: str) -> Verdict:
    return Verdict("missing-baseline", line, {"verdict": "missing", "line": line})


def regression(nodeid: str, ev: Mapping[str, Any], rule: NoRegression, baseline: Any) -> Verdict:
    """Compare one evaluation (a report entry) with its baseline entry, question by question.

    Fails ("regression") only when accuracy dropped by more than ``rule.max_drop`` and the
    exact McNemar test is significant at ``rule.alpha``; a baseline that cannot answer for
    this evaluation (no entry, one of another evaluation: ``identity.BASELINE``, or scores
    that are not finite) fails too ("missing-baseline"): nothing passes by checking nothing.
    A run that writes the baseline (``baseline.recording``) is judged against the entry it
    would replace where there is one of the same evaluation: a regression is not recorded."""
    recorded = Verdict("recorded", "", {"verdict": "recorded", "line": None})
    if baseline is None or baseline.path is None:
        return _missing(f"@pytest.mark.mmlu_no_regression needs --mmlu-baseline PATH; {HOW_TO_CREATE}")
    if not baseline.exists:
        return recorded if baseline.recording else _missing(
            f"MMLU baseline {baseline.path} does not exist; {HOW_TO_CREATE}")
    base = baseline.entry(nodeid, ev)
    where = f"{nodeid} ({describe(ev)})"
    if base is None:
        return recorded if baseline.recording else _missing(
            f"MMLU baseline {baseline.path} has no entry for {where}; {HOW_TO_CREATE}")
    if "refused" in base:  # lm-eval output that cannot answer for this evaluation
        return _missing(f"MMLU baseline {baseline.path} cannot serve {where}: {base['refused']}")
    differs = difference(of_entry(base), of_entry(ev), BASELINE, ("baseline", "this run"))
    if differs is not None:
        if baseline.recording:  # this run replaces an entry of another evaluation
            return recorded
        made = "covers" if differs.field == "questions" else (
            "was made on" if differs.field == "data" else "was made with")
        return _missing(f"MMLU baseline entry for {where} {made} {differs.phrase}; {HOW_TO_CREATE}")
    unanswered = [f"{q['subject']}#{q['index']}" for q in base["questions"] if not all_finite(q["loglikelihoods"])]
    if unanswered:  # NaN is no answer: an argmax over it would answer A
        return _missing(f"MMLU baseline entry for {where} has scores that are not finite for "
                        f"{len(unanswered)} questions ({', '.join(unanswered[:NON_FINITE_SHOWN])}"
                        f"{', ...' if len(unanswered) > NON_FINITE_SHOWN else ''}); {HOW_TO_CREATE}")
    return _paired_verdict(
        _right_or_wrong(base), _right_or_wrong(ev), rule, "MMLU regression vs baseline",
        "MMLU improved significantly vs baseline (baseline is stale)",
        extra={"base_per_subject": {s: v["accuracy"] for s, v in base.get("per_subject", {}).items()}})


def _paired_verdict(base_q: Mapping[tuple[str, int], bool], new_q: Mapping[tuple[str, int], bool],
                    rule: NoRegression, regressed: str, improved: str, noted: str = "",
                    extra: Mapping[str, Any] | None = None) -> Verdict:
    """The paired exact McNemar verdict on the same questions (right or wrong on each side):
    "regression" only when accuracy dropped by more than ``rule.max_drop`` and the drop is
    significant at ``rule.alpha``; ``regressed``/``improved`` begin the failure lines, ``noted``
    goes into their summary before the p-value, ``extra`` into the detail."""
    keys = sorted(new_q)
    c = compare_paired([base_q[k] for k in keys], [new_q[k] for k in keys])
    summary = (f"{c.base_accuracy:.3f} -> {c.new_accuracy:.3f} (n={c.n}; {c.lost} lost, "
               f"{c.gained} gained; {noted}McNemar p=")
    if c.regressed(rule.max_drop, rule.alpha):
        kind, word, line = "regression", "regressed", (
            f"{regressed}: {summary}{c.p_worse:.3f} < {rule.alpha:g})")
    elif c.improved(rule.max_drop, rule.alpha):
        kind, word, line = "improved", "improved", (
            f"{improved}: {summary}{c.p_better:.3f} < {rule.alpha:g})")
    else:
        kind, word, line = "unchanged", "unchanged", ""
    return Verdict(kind, line, {
        "verdict": word, "line": line or None, "base_accuracy": c.base_accuracy,
        "new_accuracy": c.new_accuracy, "n": c.n, "lost": c.lost, "gained": c.gained,
        "p_worse": c.p_worse, "p_better": c.p_better, "against": "baseline",
        **sensitivity(c.n, c.lost + c.gained, rule), **(extra or {})})


def sensitivity(n: int, discordant: int, rule: NoRegression) -> dict[str, Any]:
    """What the gate can see: the smallest drop detectable at 80% power on these n questions
    at the rule's alpha, under the discordance rate of this comparison (``power.py``), and
    whether the gate is too small to detect its own ``max_drop``."""

    discordance = discordant / n if n else 0.0
    drop = detectable_drop(n, rule.alpha, discordance)
    return {"detectable_drop": drop, "power": POWER, "alpha": rule.alpha, "max_drop": rule.max_drop,
            "discordance": discordance, "too_small": drop is None or drop > rule.max_drop}


def sensitivity_text(detail: Mapping[str, Any]) -> str:
    """``detects drops >= 0.110 at 80% power (n=60, alpha 0.05); TOO SMALL for max_drop 0.020``."""
    drop = detail.get("detectable_drop")
    seen = ("detects no drop at 80% power" if drop is None else
            f"detects drops >= {drop:.3f} at {detail['power']:.0%} power")
    text = f"{seen} (n={detail['n']}, alpha {detail['alpha']:g}, discordance {detail['discordance']:.2f})"
    if detail.get("too_small"):
        text += f"; TOO SMALL for its max_drop {detail['max_drop']:.3f}: add questions"
    return text


def regression_vs_full(entry: Mapping[str, Any], reference: Mapping[str, Any] | None,
                       rule: NoRegression) -> Verdict:
    """A variant (quantized, adapted) against the full-precision model on the same questions,
    model, prompts and software (``identity.FULL``): fails only when accuracy dropped by more
    than ``rule.max_drop`` and the paired exact McNemar test is significant at ``rule.alpha``,
    as against a baseline. ``reference``: the full model's entry in the same record."""
    variant = entry.get("variant") or "full"
    if variant == "full":
        return against_full_without_variant()
    if reference is None or reference.get("accuracy") is None:
        why = "did not run" if reference is None else "could not run"
        return _missing(f"MMLU no-regression against full precision: the full-precision "
                        f"evaluation of {describe(entry)} {why}")
    ref_identity = of_entry(reference)
    if ref_identity.get("quantization") != "none" or ref_identity.get("adapter") is not None:
        return _missing(f"MMLU no-regression against full precision: the reference of {describe(entry)} "
                        f"is not the full-precision model ({reference.get('variant')})")
    differs = difference(ref_identity, of_entry(entry), FULL, ("the full-precision evaluation", variant))
    if differs is not None:
        return _missing(f"MMLU no-regression against full precision: {variant} and the full model "
                        f"were evaluated with {differs.phrase}")
    full = EvaluationResult.from_dict(dict(reference))
    bad = non_finite(full, "full-precision reference ")
    if bad is not None:
        return bad
    base_q, new_q = _right_or_wrong(reference), _right_or_wrong(entry)
    full_prediction = {(q["subject"], q["index"]): q["prediction"] for q in reference["questions"]}
    same = sum(full_prediction[q["subject"], q["index"]] == q["prediction"] for q in entry["questions"])
    return _paired_verdict(
        base_q, new_q, rule, f"MMLU regression of {variant} vs full precision",
        f"MMLU {variant} is significantly better than full precision",
        noted=f"same answer on {same}/{len(new_q)}; ", extra={"against": "full", "same_prediction": same})


def _right_or_wrong(ev: Mapping[str, Any]) -> dict[tuple[str, int], bool]:
    return {(q["subject"], q["index"]): q["prediction"] == q["target"] for q in ev["questions"]}


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
    return Verdict("never-evaluated", "pytest-mmlu: this test declares MMLU gates but made no evaluation: "
                                      "add @pytest.mark.mmlu(subjects=...) or call mmlu.evaluate()")


def no_mmlu_marker() -> Verdict:
    return Verdict("error", "pytest-mmlu: the mmlu_result fixture needs @pytest.mark.mmlu(subjects=...) "
                            "on the test")


def against_full_without_variant() -> Verdict:
    return Verdict("error", "pytest-mmlu: mmlu_no_regression(against='full') compares a variant with "
                            "the full-precision model, and this test evaluates the full model itself: "
                            "name the variant with @pytest.mark.mmlu_variant(quantization=..., adapter=...)")


def bad_variant(why: str) -> Verdict:
    return Verdict("error", f"pytest-mmlu: model variant: {why}")


def bad_evaluate_call(why: str) -> Verdict:
    return Verdict("error", f"pytest-mmlu: mmlu.evaluate(): {why}")


# -- run-level lines ----------------------------------------------------------------------------
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
