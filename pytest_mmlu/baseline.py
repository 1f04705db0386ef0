"""Baselines: an earlier run's JSON report, compared question by question with this run.

An evaluation matches its baseline entry by test id, subjects, shots and limit;
it must also have the same data fingerprint and the same questions, or the
comparison is refused (and the test fails, saying how to make a baseline).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .reports import load_report, merge_reports
from .stats import PairedComparison, compare_paired

HOW_TO_CREATE = "create or refresh it with --mmlu-baseline PATH --mmlu-update-baseline"


def evaluation_key(nodeid: str, ev: dict[str, Any]) -> tuple:
    return (nodeid, tuple(ev["subjects"]), ev["shots"], ev["limit"])


def describe(ev: dict[str, Any]) -> str:
    limit = "" if ev["limit"] is None else f", limit {ev['limit']}"
    return f"{ev.get('label') or ','.join(ev['subjects'])}, {ev['shots']}-shot{limit}"


@dataclass(frozen=True)
class RegressionOutcome:
    verdict: str  # "regressed" | "improved" | "unchanged" | "missing"
    line: str | None  # failure line (regressed / missing) or summary note (improved)
    comparison: PairedComparison | None = None
    base_per_subject: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        c = self.comparison
        out: dict[str, Any] = {"verdict": self.verdict, "line": self.line}
        if c is not None:
            out.update(base_accuracy=c.base_accuracy, new_accuracy=c.new_accuracy, n=c.n,
                       lost=c.lost, gained=c.gained, p_worse=c.p_worse, p_better=c.p_better,
                       base_per_subject=self.base_per_subject)
        return out


class Baseline:
    def __init__(self, report: dict[str, Any], path: str) -> None:
        self.path = path
        self._index: dict[tuple, dict[str, Any]] = {}
        for test in report["tests"]:
            for ev in test["evaluations"]:
                if ev.get("n"):
                    self._index[evaluation_key(test["nodeid"], ev)] = ev

    @classmethod
    def load(cls, path: str) -> Baseline:
        return cls(load_report(path), path)

    def compare(self, nodeid: str, ev: dict[str, Any], max_drop: float, alpha: float) -> RegressionOutcome:
        base = self._index.get(evaluation_key(nodeid, ev))
        where = f"{nodeid} ({describe(ev)})"
        if base is None:
            return RegressionOutcome("missing", f"MMLU baseline {self.path} has no entry for {where}; {HOW_TO_CREATE}")
        if base.get("data_fingerprint") != ev.get("data_fingerprint"):
            return RegressionOutcome("missing", f"MMLU baseline entry for {where} was made on other data "
                                                f"(fingerprint differs); {HOW_TO_CREATE}")
        base_q = {(q["subject"], q["index"]): q["prediction"] == q["target"] for q in base["questions"]}
        new_q = {(q["subject"], q["index"]): q["prediction"] == q["target"] for q in ev["questions"]}
        if base_q.keys() != new_q.keys():
            return RegressionOutcome("missing", f"MMLU baseline entry for {where} covers other questions; "
                                                f"{HOW_TO_CREATE}")
        keys = sorted(new_q)
        c = compare_paired([base_q[k] for k in keys], [new_q[k] for k in keys])
        per_subject = {s: v["accuracy"] for s, v in base.get("per_subject", {}).items()}
        summary = (f"{c.base_accuracy:.3f} -> {c.new_accuracy:.3f} (n={c.n}; {c.lost} lost, "
                   f"{c.gained} gained; McNemar p=")
        if c.regressed(max_drop, alpha):
            return RegressionOutcome("regressed", f"MMLU regression vs baseline: {summary}{c.p_worse:.3f} < {alpha:g})", c, per_subject)
        if c.improved(max_drop, alpha):
            return RegressionOutcome("improved", f"MMLU improved significantly vs baseline (baseline is stale): "
                                                 f"{summary}{c.p_better:.3f} < {alpha:g})", c, per_subject)
        return RegressionOutcome("unchanged", None, c, per_subject)


class BaselineWriteError(Exception):
    """The baseline could not be updated (file unreadable, lock not obtained); it is untouched."""


LOCK_TIMEOUT_S = 120.0


def write_baseline(path: str, report: dict[str, Any]) -> int:
    """Write ``report`` as the baseline, keeping entries of tests this run did not cover.

    Read, merge and write happen under a lock file beside it, so that parallel jobs (or two
    pytest runs) updating one baseline never lose each other's entries. An existing file that
    cannot be read is never overwritten."""
    from pathlib import Path

    from filelock import FileLock, Timeout

    from .reports import ReportError, write_json_atomic

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(f"{path}.lock", timeout=LOCK_TIMEOUT_S):
            try:
                merged = merge_reports(load_report(path), report) if Path(path).is_file() else report
            except ReportError as exc:
                raise BaselineWriteError(f"{exc}; not overwriting a file it cannot read") from None
            write_json_atomic(path, merged)
    except Timeout:
        raise BaselineWriteError(f"lock {path}.lock still held after {LOCK_TIMEOUT_S:.0f} s") from None
    return sum(len(t["evaluations"]) for t in report["tests"])
