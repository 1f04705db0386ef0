"""What a run emits: progress lines, JUnit properties, and at its end the terminal summary,
the JSON report, the baseline, the GitHub step summary, the chart and the notes.

Everything here reads the session's records (plain dicts, the same on an xdist controller
as in a single process); a file that cannot be written becomes a note, never a crash.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import pytest

from . import SCORING_VERSION, __version__
from .gates import output_not_written, record_failing
from .records import own_evaluations
from .reports import ReportError, result_settings, write_json_atomic
from .results import EvaluationResult, wilson_interval

if TYPE_CHECKING:
    from .session import MmluSession


def _why(exc: Exception) -> str:
    """One line for an OSError (strerror and file), or the message of our own errors."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


# -- during the run -----------------------------------------------------------------------------
TERMINAL_EVERY_S = 0.5  # a terminal line is redrawn in place: cheap, so often
PLAIN_EVERY_S = 10.0  # a CI log keeps every line: few of them


class Progress:
    """Progress of one evaluation, around pytest's output capture.

    On a terminal: one line, redrawn in place after pytest's own (``test_x.py ..``) and
    cleared when the evaluation ends, so the terminal shows what pytest alone would. In a CI
    log (not a terminal): a plain line every PLAIN_EVERY_S, and pytest does not print the
    file name again after it. Short evaluations print nothing."""

    def __init__(self, reporter: Any, capture: Any, nodeid: str) -> None:
        self._reporter = reporter
        self._capture = capture
        self._nodeid = nodeid
        tw = getattr(reporter, "_tw", None)
        # In place needs the terminal writer's file and line (private, hence the fallback).
        self._tty = bool(getattr(reporter, "isatty", False)) and hasattr(tw, "_file") and hasattr(tw, "_current_line")
        self._every = TERMINAL_EVERY_S if self._tty else PLAIN_EVERY_S
        self._start = self._last = time.perf_counter()
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if now - self._last < self._every:
            return
        self._last = now
        rate = done / max(now - self._start, 1e-9)
        text = f"[mmlu] {self._nodeid}: {done}/{total} questions, {rate:.1f} q/s"
        with self._around_capture():
            self._draw(text) if self._tty else self._line(text)

    def close(self) -> None:
        """Clear the in-place line (a terminal); nothing to do for plain lines."""
        if self._drawn:
            with self._around_capture():
                self._raw("\r" + self._reporter._tw._current_line + "\x1b[K")
            self._drawn = False

    def _draw(self, text: str) -> None:
        tw = self._reporter._tw
        line = tw._current_line
        room = max(getattr(tw, "fullwidth", 80) - len(line) - 2, 10)
        gap = "" if line.endswith(" ") else " "
        self._raw("\r" + line + gap + middle_cut(text, room) + "\x1b[K")
        self._drawn = True

    def _raw(self, text: str) -> None:
        file = self._reporter._tw._file
        file.write(text)
        file.flush()

    def _line(self, text: str) -> None:
        reporter = self._reporter
        where = reporter.currentfspath
        if getattr(reporter._tw, "width_of_current_line", 1) == 0:
            reporter.currentfspath = None  # at a line start (after our last line): no empty line
        reporter.write_line(text)
        # write_line forgets the file pytest was printing results for, and pytest would print its
        # name again before the next result: the result goes on the next line instead.
        reporter.currentfspath = where

    def _around_capture(self) -> Any:
        from contextlib import nullcontext

        return nullcontext() if self._capture is None else self._capture.global_and_fixture_disabled()


def progress(config: pytest.Config, nodeid: str) -> Progress | None:
    """A progress display for one evaluation, or None when quiet (``-q``) or without a terminal
    reporter."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or config.get_verbosity() < 0:
        return None
    return Progress(reporter, config.pluginmanager.get_plugin("capturemanager"), nodeid)


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
        from .lm_eval_files import write_lm_eval

        try:
            files = write_lm_eval(settings.report_lm_eval, report(sess), sess.data())
            notes.append(f"pytest-mmlu: lm-eval results written under {settings.report_lm_eval} "
                         f"({len(files)} files)")
        except (OSError, ReportError) as exc:
            notes.append(output_not_written("lm-eval results", settings.report_lm_eval, _why(exc)))
            written = False
    if settings.update_baseline:
        breached = [r["nodeid"] for r in records if record_failing(r)]
        if exitstatus != 0:
            notes.append(output_not_written("baseline", settings.baseline,
                                            f"the run did not pass (exit status {int(exitstatus)})"))
        elif breached:  # an xfail-marked test's breach passes the run, never into the baseline
            notes.append(output_not_written("baseline", settings.baseline,
                                            f"a gate of {breached[0]} did not hold (marked xfail)"))
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
    notes.extend(f"NOTE {line}" for line in improved_lines(records))
    cached = sum(e.get("from_cache", False) for r in records for e in own_evaluations(r))
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
    ran = ev["accuracy"] is not None and ev.get("n")  # n 0: could not run, or a shard without its questions
    acc = f"{ev['accuracy']:.3f}" if ran else "-"
    ci = "{:.3f}-{:.3f}".format(*ev["ci95"]) if ran else "-"
    return label, acc, ci


# The terminal summary fits WIDTH columns: a CI log or an 80-100 column terminal shows it
# unwrapped. Each test's id is a line of its own, its evaluations indented below it; long
# subject lists are shortened (the report has them in full) and long lines wrapped.
WIDTH = 100
INDENT = "  "
HEADERS = ["subjects", "shots", "n", "acc", "95% CI", "floor", "peak/budget", "batch", "s", "verdict"]
RIGHT = {"shots", "n", "acc", "batch", "s"}  # numbers line up on the right
SUBJECTS_MIN = 12


def shorten(text: str, width: int) -> str:
    """``text`` in at most ``width`` columns: a list keeps its first item and a count
    (``high_school_geog…+2``), anything else is cut with an ellipsis."""
    if len(text) <= width:
        return text
    items = text.split(",")
    more = f"+{len(items) - 1}" if len(items) > 1 else ""
    head = items[0]
    room = width - len(more)
    return (head if len(head) <= room else head[:max(room - 1, 1)] + "…") + more


def middle_cut(text: str, width: int) -> str:
    """A test id in ``width`` columns: its start (the file) and end (the test) are kept."""
    if len(text) <= width:
        return text
    keep = width - 1
    return text[:keep // 3] + "…" + text[-(keep - keep // 3):]


def wrapped(line: str, width: int = WIDTH) -> list[str]:
    """``line`` in lines of at most ``width`` columns, continuations indented. A word longer
    than a line is split after a comma (a subject list); paths stay whole (copied from a log,
    a broken path is no path), so only a path longer than a line overflows."""
    import textwrap

    words = []
    for word in line.split(" "):
        while len(word) > width - 4 and "," in word[:width - 4]:
            cut = word.rindex(",", 0, width - 4) + 1
            words.append(word[:cut])
            word = word[cut:]
        words.append(word)
    return textwrap.wrap(" ".join(words), width, subsequent_indent="    ", break_on_hyphens=False,
                         break_long_words=False) or [""]


def verdict_word(ev: dict[str, Any]) -> str:
    if ev.get("breaches"):
        return "BREACH"
    return "at merge" if ev.get("judged_at_merge") else "ok"


def _cells(ev: dict[str, Any]) -> list[str]:
    floor = ev.get("floor") or {}
    floor_text = "-" if floor.get("min") is None else f"{floor['min']:.3f}"
    if floor.get("per_subject"):
        floor_text = ("" if floor.get("min") is None else floor_text) + f"+{len(floor['per_subject'])}"
    label, acc, ci = _figures(ev)
    budget = f"{_gib(ev['peak_memory_bytes'])}/{_gib(ev['budget_bytes'])}"
    return [label, "-" if ev["shots"] is None else str(ev["shots"]), str(ev["n"]), acc, ci, floor_text,
            budget, str(ev["batch_size"]), "cache" if ev.get("from_cache") else f"{ev['seconds']:.1f}",
            verdict_word(ev)]


def improved_lines(records: list[dict[str, Any]]) -> list[str]:
    """The lines of no-regression gates that found a significant improvement (a stale baseline)."""
    return [reg["line"] for r in records for e in r["evaluations"]
            for reg in e.get("regressions") or [e.get("regression") or {}] if reg.get("verdict") == "improved"]


def shown(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records a summary shows, in test id order: those that evaluated or breached (a test
    skipped without a model, say, is counted in a note instead)."""
    return [r for r in sorted(records, key=lambda r: r["nodeid"]) if own_evaluations(r) or record_failing(r)]


def summary_rows(records: list[dict[str, Any]]) -> list[tuple[str, list[list[str]]]]:
    """(test id, one row of cells per evaluation) for each test, in test id order."""
    return [(rec["nodeid"], [_cells(ev) for ev in own_evaluations(rec)]) for rec in shown(records)]


def _table(groups: list[tuple[str, list[list[str]]]]) -> list[str]:
    rows = [r for _, rs in groups for r in rs]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(HEADERS)]
    # The subjects column gets what the others leave of WIDTH.
    others = sum(widths[1:]) + 2 * (len(HEADERS) - 1) + len(INDENT)
    widths[0] = max(SUBJECTS_MIN, min(widths[0], WIDTH - others))

    def fmt(cells: list[str]) -> str:
        cells = [shorten(cells[0], widths[0]), *cells[1:]]
        return "  ".join(c.rjust(w) if h in RIGHT else c.ljust(w)
                         for c, w, h in zip(cells, widths, HEADERS)).rstrip()

    lines = [INDENT + fmt(HEADERS)]
    for nodeid, evaluation_rows in groups:
        lines.append(middle_cut(nodeid, WIDTH))
        lines.extend(INDENT + fmt(r) for r in evaluation_rows)
    return lines


def summary_lines(records: list[dict[str, Any]]) -> list[str]:
    """The terminal summary (also ``pytest-mmlu merge``'s): a table, then what the gates saw and
    every breach in full; no line is wider than WIDTH."""
    groups = summary_rows(records)
    if not groups:
        return []
    from .gates import sensitivity_text

    lines = _table(groups)
    ordered = [(rec["nodeid"], ev) for rec in shown(records) for ev in own_evaluations(rec)]
    # Which engine mode ran, where it is not the shared-prefix one (slower, never silent).
    for nodeid, ev in ordered:
        if ev.get("engine_mode") == "plain":
            lines.extend(wrapped(f"{nodeid}: scored in plain batches, no shared prefix: "
                                 f"{ev.get('engine_mode_reason') or 'the model cannot share a prefix'}"))
    seen = [(nodeid, reg) for nodeid, ev in ordered for reg in ev.get("regressions") or [ev.get("regression") or {}]
            if "base_accuracy" in reg]
    if seen:
        lines.append("no-regression gates (smallest drop detectable at 80% power):")
        for nodeid, reg in seen:
            lines.extend(wrapped(f"  {nodeid.rsplit('::', 1)[-1]}: {reg['base_accuracy']:.3f} -> "
                                 f"{reg['new_accuracy']:.3f}; {sensitivity_text(reg)}"))
    breaches = [b for rec in shown(records) for b in record_failing(rec)]
    if breaches:
        lines.append("")
        for b in breaches:
            lines.extend(wrapped(f"BREACH {b}"))
    return lines


def github_summary(records: list[dict[str, Any]]) -> str:
    """Markdown for $GITHUB_STEP_SUMMARY: every evaluation with its verdict."""
    from .gates import sensitivity_text

    lines = ["### MMLU release gate", "",
             "| test | subjects | shots | n | accuracy | 95% CI | floor | vs baseline | peak / budget (GiB) | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for rec in shown(records):
        if rec.get("breaches"):  # the test's own: a gate never evaluated, a floor left uncovered
            lines.append(f"| `{rec['nodeid']}` | - | - | - | - | - | - | - | - | ❌ {'; '.join(rec['breaches'])} |")
        for ev in own_evaluations(rec):
            floor = (ev.get("floor") or {}).get("min")
            reg = ev.get("regression") or {}
            delta = "-" if "base_accuracy" not in reg else (
                f"{reg['new_accuracy'] - reg['base_accuracy']:+.3f} ({reg['verdict']})<br>"
                f"{sensitivity_text(reg)}")
            label, acc, ci = _figures(ev)
            verdict = ("❌ " + "; ".join(ev["breaches"]) if ev.get("breaches") else
                       "⏳ judged at merge" if ev.get("judged_at_merge") else "✅ ok")
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
    for rec in shown(records):
        for ev in own_evaluations(rec):
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
