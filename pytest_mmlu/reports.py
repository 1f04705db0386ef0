"""What people read: the report header, the terminal summary and the JSON report.

JSON report (``--mmlu-report PATH``), schema 1::

    {"schema": 1, "pytest_mmlu_version": str, "scoring_version": int, "created": ISO-8601,
     "model": {"name", "model", "revision", "commit", "dtype", "device", "weight_bytes",
               "load_seconds"} | null,
     "data": str,
     "tests": [{"nodeid": str, "outcome": "passed" | "failed" | "error" | "skipped",
                "evaluations": [{"subjects": [str], "label": str, "shots": int,
                                 "limit": int | null, "n": int, "accuracy": float,
                                 "ci95": [lo, hi], "per_subject": {subject: {"accuracy", "n"}},
                                 "per_category": {category: {"accuracy", "n"}},
                                 "peak_memory_bytes": int, "budget_bytes": int | null,
                                 "batch_size": int, "batch_sizes": [int], "seconds": float,
                                 "tokens": int, "device": str, "dtype": str,
                                 "data_fingerprint": str, "weight_bytes": int,
                                 "from_cache": bool, "engine_mode": "prefix" | "plain",
                                 "floor": {"min", "per_subject"} | null, "breaches": [str],
                                 "questions": [{"subject", "index", "target", "prediction",
                                                "loglikelihoods": [4 floats, A-D]}]}]}]}

``index`` is the 0-based row in the subject's test split; ``target`` and
``prediction`` are 0-3 (A-D). An evaluation that could not run (budget below batch 1,
model load or data error) is an entry with ``n`` 0, ``accuracy`` and ``ci95`` null, and the
error line as its breach; ``subjects`` is empty and ``shots`` null for a test that declared
no evaluation (the ``mmlu_model`` fixture alone).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it: never a half-written file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def format_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return [fmt(headers), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]


def summary_lines(records: list[dict[str, Any]]) -> list[str]:
    rows = summary_rows(records)
    if not rows:
        return []
    lines = format_table(HEADERS, rows)
    breaches = [b for rec in records for ev in rec["evaluations"] for b in ev.get("breaches", [])]
    if breaches:
        lines.append("")
        lines.extend(f"BREACH {b}" for b in breaches)
    return lines


def header_lines(settings: Any, device_text: str | None, dtype: str | None) -> list[str]:
    model = settings.model
    rev = f" @ {settings.revision}" if settings.revision else ""
    return [
        f"mmlu: model {model}{rev}, dtype {dtype or settings.dtype}, device "
        f"{device_text or settings.device}",
        f"mmlu: data {settings.data}",
    ]



class ReportError(Exception):
    """A report file that cannot be used; the message says why."""


def load_report(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON report, refusing (with a clear message) unreadable or other-schema files."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ReportError(f"{path}: no such report file") from None
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: not a readable JSON report ({exc})") from None
    if not isinstance(data, dict) or "schema" not in data or "tests" not in data:
        raise ReportError(f"{path}: not a pytest-mmlu report (no 'schema' and 'tests' keys)")
    if data["schema"] != SCHEMA_VERSION:
        raise ReportError(f"{path}: report schema {data['schema']!r} is not supported; this "
                          f"pytest-mmlu reads schema {SCHEMA_VERSION}. Re-create the report with it.")
    return data


def merge_reports(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new``, plus the tests of ``old`` that ``new`` does not have (nothing lost on a partial run)."""
    have = {t["nodeid"] for t in new["tests"]}
    merged = dict(new)
    merged["tests"] = sorted([*new["tests"], *(t for t in old["tests"] if t["nodeid"] not in have)],
                             key=lambda t: t["nodeid"])
    return merged


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
    from .results import wilson_interval

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
