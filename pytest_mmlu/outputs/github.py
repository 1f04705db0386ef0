"""The GitHub Actions step summary: a Markdown table of every evaluation and its verdict, its
figures the terminal summary's (``summary.evaluation_cells``)."""

from __future__ import annotations

from typing import Any

from ..records import own_evaluations, regression_details
from ..regression import sensitivity_text
from .summary import evaluation_cells, shown

# (Markdown heading, the terminal summary's column; None: made here)
COLUMNS = [
    ("subjects", "subjects"),
    ("shots", "shots"),
    ("n", "n"),
    ("accuracy", "acc"),
    ("95% CI", "95% CI"),
    ("floor", "floor"),
    ("vs baseline", None),
    ("peak / budget (GiB)", "peak/budget"),
    ("verdict", None),
]


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _versus(ev: dict[str, Any]) -> str:
    """Each no-regression gate that compared: the change, its verdict, what it could see."""
    shown_gates = [
        f"{d['new_accuracy'] - d['base_accuracy']:+.3f} ({d['verdict']})<br>{sensitivity_text(d)}"
        for d in regression_details(ev, compared=True)
    ]
    return "<br>".join(shown_gates) or "-"


def _verdict(ev: dict[str, Any], outcome: str | None) -> str:
    if ev.get("breaches"):
        return "❌ " + "; ".join(ev["breaches"])
    if outcome in ("failed", "error"):  # its gates held; the test itself did not (an assert in its body)
        return f"❌ gates held, the test {outcome}"
    return "⏳ judged at merge" if ev.get("judged_at_merge") else "✅ ok"


def github_summary(records: list[dict[str, Any]]) -> str:
    """Markdown for $GITHUB_STEP_SUMMARY: every evaluation with its verdict."""
    headings = ["test", *(heading for heading, _ in COLUMNS)]
    lines = ["### MMLU release gate", "", _row(headings), _row(["---"] * len(headings))]
    for rec in shown(records):
        test = f"`{rec['nodeid']}`"
        if rec.get("breaches"):  # the test's own: a gate never evaluated, a floor left uncovered
            lines.append(_row([test, *["-"] * (len(COLUMNS) - 1), "❌ " + "; ".join(rec["breaches"])]))
        for ev in own_evaluations(rec):
            cells = evaluation_cells(ev)
            made = {"vs baseline": _versus(ev), "verdict": _verdict(ev, rec.get("outcome"))}
            lines.append(_row([test, *(cells[c] if c else made[h] for h, c in COLUMNS)]))
    return "\n".join(lines) + "\n"
