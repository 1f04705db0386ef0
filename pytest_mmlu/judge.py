"""The one judge: every verdict on a test's record, for every path.

:func:`judge_record` is a pure function of a test's record (``records.py``: the declared gates,
the evaluation entries with their identities, the outcome) and a baseline. The run (after
each evaluation and when the test ends), ``pytest-mmlu merge`` (on the joined shards) and
``pytest-mmlu compare`` (on the new report, the old one as the baseline) all call it, and
write what it concludes with :func:`apply`. No path keeps rules of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .gates import (
    FAILING,
    OUTCOME_CAUSES,
    REGRESSION_KINDS,
    Verdict,
    budget,
    declared_words,
    deferred,
    floor_uncovered,
    floors,
    no_evaluation,
    non_finite,
)
from .markers import ItemMarks
from .mmlu.results import EvaluationResult
from .records import covered, gates_of, is_reference, reference_for
from .regression import regression, regression_vs_full


@dataclass(frozen=True)
class Judgement:
    """What the judge concluded on one test: per evaluation entry (in the record's order) and
    for the test as a whole (a gate never evaluated, a floor no evaluation covers)."""

    evaluations: tuple[tuple[Verdict, ...], ...]
    test: tuple[Verdict, ...] = ()

    @property
    def failing(self) -> list[Verdict]:
        return [v for vs in (*self.evaluations, self.test) for v in vs if v.fails]


# -- the judge ---------------------------------------------------------------------------------
def judge_record(record: Mapping[str, Any], baseline: Any = None, *, final: bool = True) -> Judgement:
    """Every verdict on one test's record.

    ``baseline``: what ``mmlu_no_regression()`` compares with (``baseline.Baseline``, an lm-eval
    run, or None). ``final``: the test is over (its record will not grow), so the test-level
    gates are judged too. An entry made in a CI shard (``"shard"`` in it) has its floors and
    no-regression deferred to the merge."""
    marks = gates_of(record)
    nodeid = record["nodeid"]
    entries = record.get("evaluations", [])
    judged = tuple(tuple(_judge_entry(nodeid, entry, marks, entries, baseline)) for entry in entries)
    return Judgement(judged, tuple(_judge_test(record, marks)) if final else ())


def _judge_entry(
    nodeid: str, entry: Mapping[str, Any], marks: ItemMarks, entries: Sequence[Mapping[str, Any]], baseline: Any
) -> list[Verdict]:
    if is_reference(entry):
        return []  # judged with the variant it is the reference of
    if entry.get("accuracy") is None:  # could not run: what stopped it is its verdict
        return [Verdict(v["kind"], v["line"]) for v in entry.get("verdicts") or []] or [
            Verdict("error", line) for line in entry.get("breaches", [])
        ]
    result = EvaluationResult.from_dict(dict(entry))
    bad = non_finite(result)
    if bad is not None:
        # NaN accuracy is no accuracy: floors and baselines would judge garbage.
        return [bad, *filter(None, [budget(result)])]
    if entry.get("shard"):
        return [v for v in [budget(result), *deferred(marks, entry["shard"])] if v]
    verdicts = [v for v in [budget(result), *floors(result, marks.floor)] if v]
    for rule in marks.no_regressions:
        if rule.against == "full":
            verdicts.append(regression_vs_full(entry, reference_for(entries, entry), rule))
        else:
            verdicts.append(regression(nodeid, entry, rule, baseline))
    return verdicts


def _judge_test(record: Mapping[str, Any], marks: ItemMarks) -> list[Verdict]:
    own = [e for e in record.get("evaluations", []) if not is_reference(e)]
    if not marks.gated:
        return []
    if not own:
        outcome = record.get("outcome")
        if outcome == "skipped":
            return [Verdict("skipped", f"pytest-mmlu: {declared_words(marks)} not judged: the test was skipped")]
        cause = record.get("cause") or OUTCOME_CAUSES.get(str(outcome))
        if cause is None:
            return [no_evaluation()]
        return [Verdict("never-evaluated", f"pytest-mmlu: {declared_words(marks)} declared, never evaluated: {cause}")]
    return floor_uncovered([covered(e) for e in own], marks.floor)


def apply(record: Mapping[str, Any], judgement: Judgement) -> dict[str, Any]:
    """The record with the judgement written into it: each entry's ``verdicts``, ``breaches``
    (failing lines), ``regression`` (and ``regressions`` with several rules), ``judged_at_merge``
    and the declared ``floor``/``no_regression`` it was judged on; the test's own ``verdicts``
    and ``breaches``."""
    marks = gates_of(record)
    entries = []
    for entry, verdicts in zip(record.get("evaluations", []), judgement.evaluations):
        entry = dict(entry)
        for stale in ("regression", "regressions", "judged_at_merge"):
            entry.pop(stale, None)
        if not is_reference(entry):
            entry["floor"] = None if marks.floor is None else marks.floor.to_dict()
            entry["no_regression"] = marks.no_regressions[0].to_dict() if marks.no_regressions else None
            entry["verdicts"] = [v.to_dict() for v in verdicts]
            entry["breaches"] = [v.line for v in verdicts if v.fails]
        regressions = [dict(v.detail) for v in verdicts if v.kind in REGRESSION_KINDS]
        if regressions:
            entry["regression"] = regressions[0]
            if len(regressions) > 1:
                entry["regressions"] = regressions
        deferred_gates = [v.detail["gate"] for v in verdicts if v.kind == "deferred"]
        if deferred_gates:
            entry["judged_at_merge"] = deferred_gates
        entries.append(entry)
    return {
        **record,
        "evaluations": entries,
        "verdicts": [v.to_dict() for v in judgement.test],
        "breaches": [v.line for v in judgement.test if v.fails],
    }


def record_failing(record: Mapping[str, Any]) -> list[str]:
    """Every failing line of a judged record: its evaluations' and its own."""
    return [line for e in record.get("evaluations", []) for line in e.get("breaches", [])] + list(
        record.get("breaches", [])
    )


def record_failing_kinds(record: Mapping[str, Any]) -> set[str]:
    """The kinds of the failing verdicts of a judged record (which gates failed)."""
    found = [v for e in record.get("evaluations", []) for v in e.get("verdicts") or []]
    found += list(record.get("verdicts") or [])
    return {v["kind"] for v in found if v["kind"] in FAILING}
