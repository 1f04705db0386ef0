"""Baselines: an earlier run's JSON report, indexed for comparison with this run.

A baseline is a pytest-mmlu report, or lm-eval ``--log_samples`` output of one run
(``lm_eval_files.LmEvalBaseline``, matched question by question by subject and doc index).
An evaluation matches its report entry by test id, subjects, shots and limit; whether
the entry can answer for it (same data, same prompts: ``prompt_format``, same questions)
and what the comparison means is judged in ``gates.regression``, which holds every line a
person reads.
"""

from __future__ import annotations

from typing import Any

from .reports import load_report, merge_reports


def evaluation_key(nodeid: str, ev: dict[str, Any]) -> tuple:
    return (nodeid, tuple(ev["subjects"]), ev["shots"], ev["limit"])


class Baseline:
    """The baseline a run compares with: a loaded report, a path with no file yet, no path
    at all (``path`` None), or ``recording`` (this run writes it: nothing to compare)."""

    def __init__(self, report: dict[str, Any] | None, path: str | None, recording: bool = False) -> None:
        self.path = path
        self.exists = report is not None
        self.recording = recording
        self._index: dict[tuple, dict[str, Any]] = {}
        for test in (report or {}).get("tests", []):
            for ev in test["evaluations"]:
                if ev.get("n"):
                    self._index[evaluation_key(test["nodeid"], ev)] = ev

    @classmethod
    def load(cls, path: str) -> Baseline:
        return cls(load_report(path), path)

    def entry(self, nodeid: str, ev: dict[str, Any]) -> dict[str, Any] | None:
        """The baseline's evaluation of the same test, subjects, shots and limit, if any."""
        return self._index.get(evaluation_key(nodeid, ev))


def load_baseline(path: str, data: Any = None) -> Any:
    """The baseline at ``path``: a pytest-mmlu report, or an lm-eval run's results and samples
    (``data``, the MMLU data or its source, checks the lm-eval run's questions and prompts)."""
    from .lm_eval_files import LmEvalBaseline, is_lm_eval_output

    if is_lm_eval_output(path):
        return LmEvalBaseline.load(path, data)
    return Baseline.load(path)


def check_baseline(path: str) -> str:
    """Read the baseline at ``path`` once (ReportError if it cannot serve); its kind: "report"
    or "lm-eval"."""
    from .lm_eval_files import LmEvalRun, is_lm_eval_output

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
