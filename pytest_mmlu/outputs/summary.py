"""The terminal summary (also ``pytest-mmlu merge``'s): a table of every evaluation, what the
no-regression gates can see, and every breach in full; no line wider than ``text.WIDTH``.
"""

from __future__ import annotations

from typing import Any

from ..judge import record_failing
from ..records import own_evaluations, regression_details
from ..regression import sensitivity_text
from ..text import WIDTH, column_widths, middle_cut, shorten, table_line, wrapped


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f}"


def _figures(ev: dict[str, Any]) -> tuple[str, str, str]:
    """Label, accuracy and 95% CI of an evaluation entry as text ('-' where it did not run)."""
    label = ev.get("label") or ",".join(ev["subjects"])
    metric = (ev.get("task") or {}).get("metric")
    if metric:  # an lm-eval task evaluation: the metric its figures are
        label = f"{label} {metric}"
    ran = ev["accuracy"] is not None and ev.get("n")  # n 0: could not run, or a shard without its questions
    acc = f"{ev['accuracy']:.3f}" if ran else "-"
    ci = "{:.3f}-{:.3f}".format(*ev["ci95"]) if ran else "-"
    return label, acc, ci


INDENT = "  "


HEADERS = ["subjects", "shots", "n", "acc", "95% CI", "floor", "peak/budget", "batch", "s", "verdict"]


RIGHT = {"shots", "n", "acc", "batch", "s"}  # numbers line up on the right


SUBJECTS_MIN = 12


def verdict_word(ev: dict[str, Any]) -> str:
    if ev.get("breaches"):
        return "BREACH"
    return "at merge" if ev.get("judged_at_merge") else "ok"


def evaluation_cells(ev: dict[str, Any]) -> dict[str, str]:
    """An evaluation entry's cells as text, by column (``HEADERS``): the terminal summary and
    the GitHub summary show the same figures the same way."""
    floor = ev.get("floor") or {}
    floor_text = "-" if floor.get("min") is None else f"{floor['min']:.3f}"
    if floor.get("per_subject"):
        floor_text = ("" if floor.get("min") is None else floor_text) + f"+{len(floor['per_subject'])}"
    label, acc, ci = _figures(ev)
    return {
        "subjects": label,
        "shots": "-" if ev["shots"] is None else str(ev["shots"]),
        "n": str(ev["n"]),
        "acc": acc,
        "95% CI": ci,
        "floor": floor_text,
        "peak/budget": f"{_gib(ev['peak_memory_bytes'])}/{_gib(ev['budget_bytes'])}",
        "batch": str(ev["batch_size"]),
        "s": "cache" if ev.get("from_cache") else f"{ev['seconds']:.1f}",
        "verdict": verdict_word(ev),
    }


def _cells(ev: dict[str, Any]) -> list[str]:
    cells = evaluation_cells(ev)
    return [cells[h] for h in HEADERS]


def improved_lines(records: list[dict[str, Any]]) -> list[str]:
    """The lines of no-regression gates that found a significant improvement (a stale baseline)."""
    return [
        reg["line"]
        for r in records
        for e in r["evaluations"]
        for reg in regression_details(e)
        if reg.get("verdict") == "improved"
    ]


def shown(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records a summary shows, in test id order: those that evaluated or breached (a test
    skipped without a model, say, is counted in a note instead)."""
    return [r for r in sorted(records, key=lambda r: r["nodeid"]) if own_evaluations(r) or record_failing(r)]


def summary_rows(records: list[dict[str, Any]]) -> list[tuple[str, list[list[str]]]]:
    """(test id, one row of cells per evaluation) for each test, in test id order."""
    return [(rec["nodeid"], [_cells(ev) for ev in own_evaluations(rec)]) for rec in shown(records)]


def _table(groups: list[tuple[str, list[list[str]]]]) -> list[str]:
    rows = [r for _, rs in groups for r in rs]
    widths = column_widths(HEADERS, rows)
    # The subjects column gets what the others leave of WIDTH.
    others = sum(widths[1:]) + 2 * (len(HEADERS) - 1) + len(INDENT)
    widths[0] = max(SUBJECTS_MIN, min(widths[0], WIDTH - others))
    right = frozenset(i for i, h in enumerate(HEADERS) if h in RIGHT)

    def fmt(cells: list[str]) -> str:
        return table_line([shorten(cells[0], widths[0]), *cells[1:]], widths, right)

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

    lines = _table(groups)
    ordered = [(rec["nodeid"], ev) for rec in shown(records) for ev in own_evaluations(rec)]
    # Which engine mode ran, where it is not the shared-prefix one (slower, never silent).
    for nodeid, ev in ordered:
        if ev.get("engine_mode") == "plain":
            lines.extend(
                wrapped(
                    f"{nodeid}: scored in plain batches, no shared prefix: "
                    f"{ev.get('engine_mode_reason') or 'the model cannot share a prefix'}"
                )
            )
    seen = [(nodeid, reg) for nodeid, ev in ordered for reg in regression_details(ev, compared=True)]
    if seen:
        lines.append("no-regression gates (smallest drop detectable at 80% power):")
        for nodeid, reg in seen:
            lines.extend(
                wrapped(
                    f"  {nodeid.rsplit('::', 1)[-1]}: {reg['base_accuracy']:.3f} -> "
                    f"{reg['new_accuracy']:.3f}; {sensitivity_text(reg)}"
                )
            )
    breaches = [b for rec in shown(records) for b in record_failing(rec)]
    if breaches:
        lines.append("")
        for b in breaches:
            lines.extend(wrapped(f"BREACH {b}"))
    return lines
