"""What a run emits: progress lines, JUnit properties, and at its end the terminal summary,
the JSON report, the baseline, the GitHub step summary, the chart and the notes.

Everything here reads the session's records (plain dicts, the same on an xdist controller
as in a single process); a file that cannot be written becomes a note, never a crash.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from . import SCORING_VERSION, __version__
from .gates import output_not_written
from .reports import ReportError, format_table, write_json_atomic
from .results import EvaluationResult, wilson_interval

if TYPE_CHECKING:
    from .session import MmluSession


def _why(exc: Exception) -> str:
    """One line for an OSError (strerror and file), or the message of our own errors."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


# -- during the run -----------------------------------------------------------------------------
def progress(config: pytest.Config, nodeid: str) -> Callable[[int, int], None] | None:
    """A progress callback for long evaluations (a line every 5 s), or None when quiet."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or config.get_verbosity() < 0:
        return None
    start = time.perf_counter()
    last = [start]

    def show(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] < 5.0:
            return  # short evaluations print nothing; long ones a line every 5 s
        last[0] = now
        rate = done / max(now - start, 1e-9)
        line = f"[mmlu] {nodeid}: {done}/{total} questions, {rate:.1f} q/s"
        # Write around pytest's output capture, as the live-logging plugin does.
        if capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(line)
        else:
            reporter.write_line(line)

    return show


def junit_properties(result: EvaluationResult) -> list[tuple[str, Any]]:
    """``mmlu_*`` figures for the test's ``user_properties`` (JUnit XML)."""
    lo, hi = result.ci95
    return [(f"mmlu_{key}", value) for key, value in (
        ("accuracy", round(result.accuracy, 6)), ("n", result.n),
        ("ci95_low", round(lo, 6)), ("ci95_high", round(hi, 6)),
        ("peak_memory_bytes", result.peak_memory_bytes), ("budget_bytes", result.budget_bytes),
        ("batch_size", result.batch_size), ("seconds", round(result.seconds, 3)),
        ("from_cache", result.from_cache))]


# -- end of the run -----------------------------------------------------------------------------
def report(sess: MmluSession) -> dict[str, Any]:
    """The JSON report (schema in ``reports.py``)."""
    model = sess.model_info or {"model": sess.settings.model, "revision": sess.settings.revision,
                                "loaded": False}
    return {
        "schema": 1,
        "pytest_mmlu_version": __version__,
        "scoring_version": SCORING_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": model,
        "data": sess.settings.data,
        "tests": [sess.records[k] for k in sorted(sess.records)],
    }


def finish(sess: MmluSession, exitstatus: int) -> bool:
    """End of the run (controller): report, baseline, GitHub summary, chart, notes. False when
    a report or baseline that was asked for could not be written (said in the notes)."""
    settings, notes = sess.settings, sess.notes
    written = True
    records = list(sess.records.values())
    if settings.report and records:
        try:
            write_json_atomic(settings.report, report(sess))
        except OSError as exc:  # checked at start-up; the disk can still change under a run
            notes.append(output_not_written("report", settings.report, _why(exc)))
            written = False
    if settings.update_baseline:
        if exitstatus != 0:
            notes.append(output_not_written("baseline", settings.baseline,
                                            f"the run did not pass (exit status {int(exitstatus)})"))
        elif records:
            from .baseline import BaselineWriteError, write_baseline

            try:
                n = write_baseline(settings.baseline, report(sess))
            except (OSError, BaselineWriteError) as exc:
                notes.append(output_not_written("baseline", settings.baseline, _why(exc)))
                written = False
            else:
                notes.append(f"pytest-mmlu: wrote baseline {settings.baseline}: {n} "
                             f"evaluations from {len(records)} tests")
    improved = [e["regression"]["line"] for r in records for e in r["evaluations"]
                if (e.get("regression") or {}).get("verdict") == "improved"]
    notes.extend(f"NOTE {line}" for line in improved)
    cached = sum(e.get("from_cache", False) for r in records for e in r["evaluations"])
    if cached:
        notes.append(f"pytest-mmlu: {cached} evaluation(s) served from the result cache "
                     f"({'model loaded for the rest' if sess.model_loaded else 'model not loaded'})")
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
            notes.append(f"pytest-mmlu: chart not written: {type(exc).__name__}: {exc}")
    return written


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f}"


def _figures(ev: dict[str, Any]) -> tuple[str, str, str]:
    """Label, accuracy and 95% CI of an evaluation entry as text ('-' where it did not run)."""
    label = ev.get("label") or ",".join(ev["subjects"])
    acc = "-" if ev["accuracy"] is None else f"{ev['accuracy']:.3f}"
    ci = "-" if ev["ci95"] is None else "{:.3f}-{:.3f}".format(*ev["ci95"])
    return label, acc, ci


def summary_rows(records: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for rec in sorted(records, key=lambda r: r["nodeid"]):
        for ev in rec["evaluations"]:
            floor = ev.get("floor") or {}
            floor_text = "-" if floor.get("min") is None else f"{floor['min']:.3f}"
            if floor.get("per_subject"):
                floor_text += f" +{len(floor['per_subject'])}subj"
            label, acc, ci = _figures(ev)
            verdict = "BREACH" if ev.get("breaches") else "ok"
            rows.append([
                rec["nodeid"], label, "-" if ev["shots"] is None else str(ev["shots"]),
                str(ev["n"]), acc, ci, floor_text,
                _gib(ev["peak_memory_bytes"]), _gib(ev["budget_bytes"]), str(ev["batch_size"]),
                "cache" if ev.get("from_cache") else f"{ev['seconds']:.1f}", verdict,
            ])
    return rows


HEADERS = ["test", "subjects", "shots", "n", "acc", "95% CI", "floor", "peak GiB", "budget GiB",
           "batch", "seconds", "verdict"]


def summary_lines(records: list[dict[str, Any]]) -> list[str]:
    rows = summary_rows(records)
    if not rows:
        return []
    lines = format_table(HEADERS, rows)
    # Which engine mode ran, where it is not the shared-prefix one (slower, never silent).
    lines.extend(f"{rec['nodeid']}: scored in plain batches, no shared prefix: "
                 f"{ev.get('engine_mode_reason') or 'the model cannot share a prefix'}"
                 for rec in sorted(records, key=lambda r: r["nodeid"]) for ev in rec["evaluations"]
                 if ev.get("engine_mode") == "plain")
    breaches = [b for rec in records for ev in rec["evaluations"] for b in ev.get("breaches", [])]
    if breaches:
        lines.append("")
        lines.extend(f"BREACH {b}" for b in breaches)
    return lines


def github_summary(records: list[dict[str, Any]]) -> str:
    """Markdown for $GITHUB_STEP_SUMMARY: every evaluation with its verdict."""
    lines = ["### MMLU release gate", "",
             "| test | subjects | shots | n | accuracy | 95% CI | floor | vs baseline | peak / budget (GiB) | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for rec in sorted(records, key=lambda r: r["nodeid"]):
        for ev in rec["evaluations"]:
            floor = (ev.get("floor") or {}).get("min")
            reg = ev.get("regression") or {}
            delta = "-" if "base_accuracy" not in reg else (
                f"{reg['new_accuracy'] - reg['base_accuracy']:+.3f} ({reg['verdict']})")
            label, acc, ci = _figures(ev)
            verdict = "❌ " + "; ".join(ev["breaches"]) if ev.get("breaches") else "✅ ok"
            lines.append(f"| `{rec['nodeid']}` | {label} | "
                         f"{'-' if ev['shots'] is None else ev['shots']} | {ev['n']} | {acc} | {ci} | "
                         f"{'-' if floor is None else f'{floor:.3f}'} | {delta} | "
                         f"{_gib(ev['peak_memory_bytes'])} / {_gib(ev['budget_bytes'])} | {verdict} |")
    return "\n".join(lines) + "\n"


def write_chart(path: str, records: list[dict[str, Any]]) -> None:
    """PNG of per-subject accuracy with 95% intervals; per-subject floors (bars) and baseline
    accuracies (x) marked; subjects below their floor in red."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ReportError("--mmlu-chart needs matplotlib: pip install 'pytest-mmlu[chart]'") from None

    rows = []  # (label, accuracy, lo, hi, floor, baseline, breached)
    for rec in sorted(records, key=lambda r: r["nodeid"]):
        for ev in rec["evaluations"]:
            if not ev.get("n"):
                continue
            floor = ev.get("floor") or {}
            per_floor = floor.get("per_subject") or {}
            base = (ev.get("regression") or {}).get("base_per_subject") or {}
            for subject, s in ev["per_subject"].items():
                correct = round(s["accuracy"] * s["n"])
                lo, hi = wilson_interval(correct, s["n"])
                f = per_floor.get(subject)  # an overall floor applies to the total, not per subject
                rows.append((f"{subject} ({ev['shots']}-shot)", s["accuracy"], lo, hi, f,
                             base.get(subject), f is not None and s["accuracy"] < f))
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.2))
    for y, (_, acc, lo, hi, f, b, breached) in enumerate(rows):
        colour = "tab:red" if breached else "tab:blue"
        # max(0, ...): at 0% or 100% the Wilson bound can sit a rounding error past the point.
        ax.errorbar(acc, y, xerr=[[max(0.0, acc - lo)], [max(0.0, hi - acc)]], fmt="o",
                    color=colour, capsize=3)
        if f is not None:
            ax.plot([f, f], [y - 0.4, y + 0.4], color="black", linewidth=2)
        if b is not None:
            ax.plot(b, y, marker="x", color="tab:green", markersize=8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy (95% Wilson interval); | floor, x baseline, red = breach")
    ax.invert_yaxis()
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
