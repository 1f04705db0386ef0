"""Baselines: an earlier run's JSON report, indexed for comparison with this run.

A baseline is a pytest-mmlu report, or lm-eval ``--log_samples`` output of one run
(``lm_eval_read.LmEvalBaseline``, matched question by question by subject and doc index).
An evaluation's baseline entry is the report's entry of the same test, subjects, shots and
limit that is the same evaluation for ``identity.BASELINE`` (the variant, dtype, prompts,
data and questions; a test may evaluate several variants of one spec). Whether the entry
can answer, and what the comparison means, is judged in ``regression.regression`` (through the
same ``identity.difference``), which holds every line a person reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..identity import BASELINE, VARIANT, difference, of_entry
from ..records import is_reference, own_evaluations, union_by_nodeid
from .lm_eval_format import is_lm_eval_output
from .lm_eval_read import LmEvalBaseline, LmEvalRun
from .report import ReportError, load_report, write_json_atomic


def evaluation_key(nodeid: str, ev: dict[str, Any]) -> tuple:
    return (nodeid, tuple(ev["subjects"]), ev["shots"], ev["limit"])


class Baseline:
    """The baseline a run compares with: a loaded report, a path with no file yet, no path
    at all (``path`` None), or ``recording`` (this run writes it: nothing to compare)."""

    def __init__(self, report: dict[str, Any] | None, path: str | None, recording: bool = False) -> None:
        self.path = path
        self.exists = report is not None
        self.recording = recording
        self._index: dict[tuple, list[dict[str, Any]]] = {}
        for test in (report or {}).get("tests", []):
            for ev in test["evaluations"]:
                if ev.get("n") and not is_reference(ev):
                    self._index.setdefault(evaluation_key(test["nodeid"], ev), []).append(ev)

    @classmethod
    def load(cls, path: str) -> Baseline:
        return cls(load_report(path), path)

    def entry(self, nodeid: str, ev: dict[str, Any]) -> dict[str, Any] | None:
        """The baseline's evaluation of the same test, subjects, shots and limit that is the
        same evaluation as ``ev`` (else the first of them: the gate says what differs)."""
        found = self._index.get(evaluation_key(nodeid, ev), [])
        ours = of_entry(ev)
        same = [base for base in found if difference(of_entry(base), ours, BASELINE) is None]
        candidates = same or found
        return candidates[0] if candidates else None


def load_baseline(path: str, data: Any = None, tokenizer: Any = None, prepare: Any = None) -> Any:
    """The baseline at ``path``: a pytest-mmlu report, or an lm-eval run's results and samples
    (``data``, the MMLU data or its source, checks the lm-eval run's questions and prompts;
    ``tokenizer``, a callable giving the run's tokenizer, renders them with a chat template;
    ``prepare`` gives a task evaluation's prepared lm-eval tasks, to check its documents)."""

    if is_lm_eval_output(path):
        return LmEvalBaseline.load(path, data, tokenizer, prepare)
    return Baseline.load(path)


def check_baseline(path: str) -> str:
    """Read the baseline at ``path`` once (ReportError if it cannot serve); its kind: "report"
    or "lm-eval"."""

    if is_lm_eval_output(path):
        LmEvalRun.load(path)
        return "lm-eval"
    load_report(path)
    return "report"


class BaselineWriteError(Exception):
    """The baseline could not be updated (file unreadable, lock not obtained); it is untouched."""


LOCK_TIMEOUT_S = 120.0


def write_baseline(path: str, report: dict[str, Any]) -> int:
    """Write ``report`` as the baseline, keeping entries of tests this run did not cover.

    Read, merge and write happen under a lock file beside it, so that parallel jobs (or two
    pytest runs) updating one baseline never lose each other's entries. An existing file that
    cannot be read is never overwritten."""

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(f"{path}.lock", timeout=LOCK_TIMEOUT_S):
            try:
                old = load_report(path) if Path(path).is_file() else {"tests": []}
                merged = _kept_and_new(old, report)
            except ReportError as exc:
                raise BaselineWriteError(f"{exc}; not overwriting a file it cannot read") from None
            write_json_atomic(path, merged)
    except Timeout:
        raise BaselineWriteError(f"lock {path}.lock still held after {LOCK_TIMEOUT_S:.0f} s") from None
    return sum(1 for t in report["tests"] for e in own_evaluations(t) if e.get("n"))


def _kept_and_new(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new``, plus what of ``old`` it did not evaluate: the tests it did not run (a test
    skipped this time keeps its entries), and within a test the entries of other specs and
    other variants (an int8 job and a full-model job updating one file keep each other's)."""
    evaluated = [t for t in new["tests"] if any(e.get("n") for e in t["evaluations"])]
    before = {t["nodeid"]: t for t in old["tests"]}
    tests = []
    for test in evaluated:
        ours = own_evaluations(test)
        kept = [
            e
            for e in own_evaluations(before.get(test["nodeid"], {}))
            if e.get("n") and not any(_replaces(new_entry, e) for new_entry in ours)
        ]
        tests.append({**test, "evaluations": [*test["evaluations"], *kept]} if kept else test)
    return {**new, "tests": union_by_nodeid(old["tests"], tests)}


def _replaces(new_entry: dict[str, Any], old_entry: dict[str, Any]) -> bool:
    """A new entry replaces an old one of the same spec and the same variant."""
    return (
        evaluation_key("", new_entry) == evaluation_key("", old_entry)
        and difference(of_entry(old_entry), of_entry(new_entry), VARIANT) is None
    )
