"""The GitHub Actions step summary: a Markdown table of every evaluation and its verdict."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..records import own_evaluations
from ..regression import sensitivity_text
from .summary import _figures, _gib, shown

if TYPE_CHECKING:
    pass


def github_summary(records: list[dict[str, Any]]) -> str:
    """Markdown for $GITHUB_STEP_SUMMARY: every evaluation with its verdict."""

    lines = [
        "### MMLU release gate",
        "",
        "| test | subjects | shots | n | accuracy | 95% CI | floor | vs baseline | peak / budget (GiB) | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for rec in shown(records):
        if rec.get("breaches"):  # the test's own: a gate never evaluated, a floor left uncovered
            lines.append(f"| `{rec['nodeid']}` | - | - | - | - | - | - | - | - | ❌ {'; '.join(rec['breaches'])} |")
        for ev in own_evaluations(rec):
            floor = (ev.get("floor") or {}).get("min")
            reg = ev.get("regression") or {}
            delta = (
                "-"
                if "base_accuracy" not in reg
                else (
                    f"{reg['new_accuracy'] - reg['base_accuracy']:+.3f} ({reg['verdict']})<br>{sensitivity_text(reg)}"
                )
            )
            label, acc, ci = _figures(ev)
            verdict = (
                "❌ " + "; ".join(ev["breaches"])
                if ev.get("breaches")
                else "⏳ judged at merge"
                if ev.get("judged_at_merge")
                else "✅ ok"
            )
            lines.append(
                f"| `{rec['nodeid']}` | {label} | "
                f"{'-' if ev['shots'] is None else ev['shots']} | {ev['n']} | {acc} | {ci} | "
                f"{'-' if floor is None else f'{floor:.3f}'} | {delta} | "
                f"{_gib(ev['peak_memory_bytes'])} / {_gib(ev['budget_bytes'])} | {verdict} |"
            )
    return "\n".join(lines) + "\n"
