"""A PNG of per-subject accuracy with 95% intervals, floors and baselines marked."""

from __future__ import annotations

import os
from typing import Any

from ..mmlu.results import wilson_interval
from ..records import own_evaluations
from ..reports.report import ReportError
from .summary import shown


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
                rows.append(
                    (
                        f"{subject} ({ev['shots']}-shot)",
                        s["accuracy"],
                        lo,
                        hi,
                        f,
                        base.get(subject),
                        f is not None and s["accuracy"] < f,
                    )
                )
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.2))
    for y, (_, acc, lo, hi, f, b, breached) in enumerate(rows):
        colour = "tab:red" if breached else "tab:blue"
        # max(0, ...): at 0% or 100% the Wilson bound can sit a rounding error past the point.
        ax.errorbar(acc, y, xerr=[[max(0.0, acc - lo)], [max(0.0, hi - acc)]], fmt="o", color=colour, capsize=3)
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
