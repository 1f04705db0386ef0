"""The no-regression gates: an evaluation against its baseline entry, or a variant against the
full-precision model, question by question (paired exact McNemar), and what such a gate can
see (the smallest drop it detects at 80% power).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .gates import NON_FINITE_SHOWN, Verdict, against_full_without_variant, non_finite
from .identity import BASELINE, FULL, difference, of_entry
from .markers import NoRegression
from .mmlu.results import EvaluationResult, answerable, document_weights, question_value, shots_text
from .power import POWER, detectable_drop
from .stats import compare_paired

HOW_TO_CREATE = "create or refresh it with --mmlu-baseline PATH --mmlu-update-baseline"


# -- regression against a baseline --------------------------------------------------------------
def describe(ev: Mapping[str, Any]) -> str:
    limit = "" if ev["limit"] is None else f", limit {ev['limit']}"
    task = ev.get("task") or {}
    metric = f", {task['metric']}" if task.get("metric") else ""
    return f"{ev.get('label') or ','.join(ev['subjects'])}, {shots_text(ev['shots'])}{limit}{metric}"


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
        return (
            recorded
            if baseline.recording
            else _missing(f"MMLU baseline {baseline.path} does not exist; {HOW_TO_CREATE}")
        )
    base = baseline.entry(nodeid, ev)
    where = f"{nodeid} ({describe(ev)})"
    if base is None:
        return (
            recorded
            if baseline.recording
            else _missing(f"MMLU baseline {baseline.path} has no entry for {where}; {HOW_TO_CREATE}")
        )
    if "refused" in base:  # lm-eval output that cannot answer for this evaluation
        return _missing(f"MMLU baseline {baseline.path} cannot serve {where}: {base['refused']}")
    differs = difference(of_entry(base), of_entry(ev), BASELINE, ("baseline", "this run"))
    if differs is not None:
        if baseline.recording:  # this run replaces an entry of another evaluation
            return recorded
        made = (
            "covers"
            if differs.field == "questions"
            else ("was made on" if differs.field == "data" else "was made with")
        )
        return _missing(f"MMLU baseline entry for {where} {made} {differs.phrase}; {HOW_TO_CREATE}")
    unanswered = [
        f"{q['subject']}#{q['index']}" for q in base["questions"] if not answerable(q["loglikelihoods"], q.get("score"))
    ]
    if unanswered:  # NaN is no answer: an argmax over it would answer A
        return _missing(
            f"MMLU baseline entry for {where} has scores that are not finite for "
            f"{len(unanswered)} questions ({', '.join(unanswered[:NON_FINITE_SHOWN])}"
            f"{', ...' if len(unanswered) > NON_FINITE_SHOWN else ''}); {HOW_TO_CREATE}"
        )
    return _paired_verdict(
        _right_or_wrong(base),
        _right_or_wrong(ev),
        document_weights(ev),
        rule,
        "MMLU regression vs baseline",
        "MMLU improved significantly vs baseline (baseline is stale)",
        extra={"base_per_subject": {s: v["accuracy"] for s, v in base.get("per_subject", {}).items()}},
    )


def _paired_verdict(
    base_q: Mapping[tuple[str, int], float],
    new_q: Mapping[tuple[str, int], float],
    weights: Mapping[tuple[str, int], float] | None,
    rule: NoRegression,
    regressed: str,
    improved: str,
    noted: str = "",
    extra: Mapping[str, Any] | None = None,
) -> Verdict:
    """The paired exact McNemar verdict on the same questions (right or wrong on each side):
    "regression" only when accuracy dropped by more than ``rule.max_drop`` and the drop is
    significant at ``rule.alpha``; ``regressed``/``improved`` begin the failure lines, ``noted``
    goes into their summary before the p-value, ``extra`` into the detail."""
    keys = sorted(new_q)
    c = compare_paired(
        [base_q[k] for k in keys], [new_q[k] for k in keys], None if weights is None else [weights[k] for k in keys]
    )
    summary = (
        f"{c.base_accuracy:.3f} -> {c.new_accuracy:.3f} (n={c.n}; {c.lost} lost, {c.gained} gained; {noted}{c.test} p="
    )
    if c.regressed(rule.max_drop, rule.alpha):
        kind, word, line = "regression", "regressed", (f"{regressed}: {summary}{c.p_worse:.3f} < {rule.alpha:g})")
    elif c.improved(rule.max_drop, rule.alpha):
        kind, word, line = "improved", "improved", (f"{improved}: {summary}{c.p_better:.3f} < {rule.alpha:g})")
    else:
        kind, word, line = "unchanged", "unchanged", ""
    return Verdict(
        kind,
        line,
        {
            "verdict": word,
            "line": line or None,
            "base_accuracy": c.base_accuracy,
            "new_accuracy": c.new_accuracy,
            "n": c.n,
            "lost": c.lost,
            "gained": c.gained,
            "p_worse": c.p_worse,
            "p_better": c.p_better,
            "against": "baseline",
            **sensitivity(c.n, c.lost + c.gained, rule, c.test),
            **(extra or {}),
        },
    )


def sensitivity(n: int, discordant: int, rule: NoRegression, test: str = "McNemar") -> dict[str, Any]:
    """What the gate can see: the smallest drop detectable at 80% power on these n questions
    at the rule's alpha, under the discordance rate of this comparison (``power.py``), and
    whether the gate is too small to detect its own ``max_drop``. The power of the permutation
    test (a metric's values, weighted questions) depends on how the values spread: not
    estimated (``detectable_drop`` None, ``test`` says which)."""

    discordance = discordant / n if n else 0.0
    if test != "McNemar":
        return {
            "test": test,
            "detectable_drop": None,
            "power": None,
            "alpha": rule.alpha,
            "max_drop": rule.max_drop,
            "discordance": discordance,
            "too_small": False,
        }
    drop = detectable_drop(n, rule.alpha, discordance)
    return {
        "detectable_drop": drop,
        "power": POWER,
        "alpha": rule.alpha,
        "max_drop": rule.max_drop,
        "discordance": discordance,
        "too_small": drop is None or drop > rule.max_drop,
    }


def sensitivity_text(detail: Mapping[str, Any]) -> str:
    """``detects drops >= 0.110 at 80% power (n=60, alpha 0.05); TOO SMALL for max_drop 0.020``."""
    drop = detail.get("detectable_drop")
    if detail.get("test", "McNemar") != "McNemar":
        return f"{detail['test']} test of the mean, power not estimated (n={detail['n']}, alpha {detail['alpha']:g})"
    seen = (
        "detects no drop at 80% power"
        if drop is None
        else f"detects drops >= {drop:.3f} at {detail['power']:.0%} power"
    )
    text = f"{seen} (n={detail['n']}, alpha {detail['alpha']:g}, discordance {detail['discordance']:.2f})"
    if detail.get("too_small"):
        text += f"; TOO SMALL for its max_drop {detail['max_drop']:.3f}: add questions"
    return text


def regression_vs_full(entry: Mapping[str, Any], reference: Mapping[str, Any] | None, rule: NoRegression) -> Verdict:
    """A variant (quantized, adapted) against the full-precision model on the same questions,
    model, prompts and software (``identity.FULL``): fails only when accuracy dropped by more
    than ``rule.max_drop`` and the paired exact McNemar test is significant at ``rule.alpha``,
    as against a baseline. ``reference``: the full model's entry in the same record."""
    variant = entry.get("variant") or "full"
    if variant == "full":
        return against_full_without_variant()
    if reference is None or reference.get("accuracy") is None:
        why = "did not run" if reference is None else "could not run"
        return _missing(
            f"MMLU no-regression against full precision: the full-precision evaluation of {describe(entry)} {why}"
        )
    ref_identity = of_entry(reference)
    if ref_identity.get("quantization") != "none" or ref_identity.get("adapter") is not None:
        return _missing(
            f"MMLU no-regression against full precision: the reference of {describe(entry)} "
            f"is not the full-precision model ({reference.get('variant')})"
        )
    differs = difference(ref_identity, of_entry(entry), FULL, ("the full-precision evaluation", variant))
    if differs is not None:
        return _missing(
            f"MMLU no-regression against full precision: {variant} and the full model "
            f"were evaluated with {differs.phrase}"
        )
    full = EvaluationResult.from_dict(dict(reference))
    bad = non_finite(full, "full-precision reference ")
    if bad is not None:
        return bad
    base_q, new_q, weights = _right_or_wrong(reference), _right_or_wrong(entry), document_weights(entry)
    full_prediction = {(q["subject"], q["index"]): q["prediction"] for q in reference["questions"]}
    same = sum(full_prediction[q["subject"], q["index"]] == q["prediction"] for q in entry["questions"])
    return _paired_verdict(
        base_q,
        new_q,
        weights,
        rule,
        f"MMLU regression of {variant} vs full precision",
        f"MMLU {variant} is significantly better than full precision",
        # the same argmax: what a 0/1 metric's lost and gained count (a metric's values move anyway)
        noted=f"same answer on {same}/{len(new_q)}; " if set(new_q.values()) | set(base_q.values()) <= {0, 1} else "",
        extra={"against": "full", "same_prediction": same},
    )


def _right_or_wrong(ev: Mapping[str, Any]) -> dict[tuple[str, int], float]:
    """Each question's value: right (1) or wrong (0), or a task metric's value."""
    return {(q["subject"], q["index"]): question_value(q) for q in ev["questions"]}
