"""What a run writes at its end: the JSON report, lm-eval files, the baseline, the GitHub step
summary, the chart and the notes. A file that cannot be written becomes a note, never a crash.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..gates import output_not_written
from ..judge import record_failing
from ..records import own_evaluations
from ..reports.baseline import BaselineWriteError, write_baseline
from ..reports.lm_eval_write import write_lm_eval
from ..reports.report import ReportError, report_header, result_settings, write_json_atomic
from ..tasks.registry import TaskError
from ..text import first_line
from .chart import write_chart
from .github import github_summary
from .summary import improved_lines

if TYPE_CHECKING:
    from ..session import MmluSession


def _why(exc: Exception) -> str:
    """One line for an OSError (strerror and file), or the message of our own errors."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


# -- end of the run -----------------------------------------------------------------------------
def report(sess: MmluSession) -> dict[str, Any]:
    """The JSON report (schema in ``reports/report.py``)."""
    model = sess.model_info or {"model": sess.settings.model, "revision": sess.settings.revision, "loaded": False}
    return {
        **report_header(),
        "model": model,
        "data": sess.settings.data,
        "settings": result_settings(sess.settings),
        "shard": None if sess.settings.shard is None else sess.settings.shard.to_dict(),
        "tests": [sess.records[k] for k in sorted(sess.records)],
    }


def finish(sess: MmluSession, exitstatus: int) -> bool:
    """End of the run (controller): report, baseline, GitHub summary, chart, notes. False when
    a report or baseline that was asked for could not be written (said in the notes)."""
    settings, notes = sess.settings, sess.notes
    written = True
    records = list(sess.records.values())
    if settings.report:  # written even with nothing in it: a report left from another run is no verdict
        try:
            write_json_atomic(settings.report, report(sess))
        except OSError as exc:  # checked at start-up; the disk can still change under a run
            notes.append(output_not_written("report", settings.report, _why(exc)))
            written = False
    if settings.report_lm_eval and records:
        try:
            files = write_lm_eval(settings.report_lm_eval, report(sess), sess.data(), prepare=sess.tasks.for_entry)
            notes.append(f"pytest-mmlu: lm-eval results written under {settings.report_lm_eval} ({len(files)} files)")
        except (OSError, ReportError, TaskError) as exc:  # TaskError: a task that cannot be loaded here
            notes.append(output_not_written("lm-eval results", settings.report_lm_eval, _why(exc)))
            written = False
    if settings.update_baseline:
        baseline = settings.baseline
        assert baseline is not None  # --mmlu-update-baseline without one is refused at configure
        breached = [r["nodeid"] for r in records if record_failing(r)]
        if exitstatus != 0:
            notes.append(
                output_not_written("baseline", baseline, f"the run did not pass (exit status {int(exitstatus)})")
            )
        elif breached:  # an xfail-marked test's breach passes the run, never into the baseline
            notes.append(
                output_not_written("baseline", baseline, f"a gate of {breached[0]} did not hold (marked xfail)")
            )
        elif records:
            try:
                n = write_baseline(baseline, report(sess))
            except (OSError, BaselineWriteError) as exc:
                notes.append(output_not_written("baseline", baseline, _why(exc)))
                written = False
            else:
                notes.append(f"pytest-mmlu: wrote baseline {baseline}: {n} evaluations from {len(records)} tests")
    notes.extend(f"NOTE {line}" for line in improved_lines(records))
    cached = sum(e.get("from_cache", False) for r in records for e in own_evaluations(r))
    if cached:
        notes.append(
            f"pytest-mmlu: {cached} evaluation(s) served from the result cache "
            f"({'model loaded for the rest' if sess.model_loaded else 'model not loaded'})"
        )
    summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_path and records:
        try:
            with open(summary_path, "a") as f:
                f.write(github_summary(records))
        except OSError as exc:
            notes.append(output_not_written("GitHub step summary", summary_path, _why(exc)))
    if settings.chart and records:
        try:
            write_chart(settings.chart, records)
        except ReportError as exc:
            notes.append(f"pytest-mmlu: chart not written: {exc}")
        except Exception as exc:  # noqa: BLE001 - a chart must never turn a gate's verdict into a crash
            notes.append(f"pytest-mmlu: chart not written: {type(exc).__name__}: {first_line(exc)}")
    return written
