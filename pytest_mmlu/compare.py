"""``pytest-mmlu compare OLD NEW``: NEW's tests judged with OLD as their baseline.

Every gate NEW's tests declared is judged by the one judge (``judge.judge_record``) on NEW's
records, OLD serving as the baseline of their no-regression gates (an ``against="full"`` gate
compares with the full-precision reference NEW recorded beside the variant). Every other
evaluation the two reports share is compared too, under the command line's ``max_drop`` and
``alpha``: that rule is declared for this comparison, on the shared evaluations only, and
judged by the same judge. Nothing here prints; ``cli.py`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .gates import OUTCOME_CAUSES
from .judge import Judgement, apply, judge_record, record_failing, record_failing_kinds
from .markers import ItemMarks, NoRegression
from .records import gates_of, own_evaluations, regression_details
from .regression import describe
from .reports.baseline import Baseline, evaluation_key

FAILED_OUTCOMES = tuple(OUTCOME_CAUSES)  # a test that ended so: its declared gates fail
EXPECTED_FAILURES = ("xfailed", "xpassed")  # a test marked xfail: its gates may fail, as pytest allows


@dataclass
class TestVerdict:
    """What compare concluded on one of NEW's tests: its status (``FAILED``, ``passed``,
    ``skipped``, ``xfailed``), the gates that failed, and the evaluations as judged."""

    nodeid: str
    status: str
    kinds: list[str]
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # judged entries (declared, then compared)
    breaches: list[str] = field(default_factory=list)  # the test's own


@dataclass
class Comparison:
    tests: list[TestVerdict]
    compared: int  # comparisons made (evaluations judged against OLD)
    judged: bool  # any gate judged, or any comparison made: a verdict exists
    old_only: list[tuple[str, tuple[str, ...], int, Any]]  # evaluations OLD has and NEW does not

    @property
    def failed(self) -> bool:
        return any(t.status == "FAILED" for t in self.tests)


def compare_reports(old: dict[str, Any], new: dict[str, Any], old_path: str, rule: NoRegression) -> Comparison:
    baseline = Baseline(old, old_path)
    tests, compared, judged_any = [], 0, False
    for test in new["tests"]:
        marks = gates_of(test)
        judgement = judge_record(test, baseline)
        judged = apply(test, judgement)
        records = [judged]
        shared = [e for e in own_evaluations(test) if e.get("n") and baseline.entry(test["nodeid"], e) is not None]
        if shared and not any(r.against == "baseline" for r in marks.no_regressions):
            # The command line's rule, declared for the shared evaluations only.
            triage = {**test, "gates": ItemMarks(no_regressions=(rule,)).to_dict(), "evaluations": shared}
            triage_judgement = judge_record(triage, baseline)
            records.append(apply(triage, triage_judgement))
            judged_any = judged_any or _judged(triage_judgement)
        judged_any = judged_any or _judged(judgement)
        entries = [e for r in records for e in own_evaluations(r)]
        compared += sum("base_accuracy" in c for e in entries for c in regression_details(e, compared=True))
        failing = any(record_failing(r) for r in records)
        outcome = test.get("outcome")
        if outcome in EXPECTED_FAILURES and (not failing or test.get("xfail_excuses_gates", True)):
            status = "xfailed" if failing else "passed"  # marked xfail: a failure is expected
        elif failing or (outcome in FAILED_OUTCOMES and not record_failing(test)):
            status = "FAILED"  # a gate, or the test's own body (no gate of it breached in that run)
        else:
            status = "skipped" if outcome == "skipped" else "passed"
        kinds = sorted(set().union(*(record_failing_kinds(r) for r in records)))
        tests.append(TestVerdict(test["nodeid"], status, kinds, entries, list(judged.get("breaches", []))))
    new_keys = {evaluation_key(t["nodeid"], e) for t in new["tests"] for e in own_evaluations(t)}
    old_only = sorted(
        {evaluation_key(t["nodeid"], e) for t in old["tests"] for e in own_evaluations(t) if e.get("n")} - new_keys
    )
    return Comparison(tests, compared, judged_any or compared > 0, old_only)


def _judged(judgement: Judgement) -> bool:
    return any(v.kind != "skipped" for vs in (*judgement.evaluations, judgement.test) for v in vs)


def heading(nodeid: str, entry: dict[str, Any]) -> str:
    return f"{nodeid} ({describe(entry) if entry.get('shots') is not None else '-'})"
