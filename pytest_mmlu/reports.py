"""The JSON report file: its schema, atomic writes, reading and merging; the report header.

What a run emits at its end (summary, report, baseline, GitHub summary, chart) is in
``outputs.py``.

JSON report (``--mmlu-report PATH``), schema 1::

    {"schema": 1, "pytest_mmlu_version": str, "scoring_version": int, "created": ISO-8601,
     "model": {"name", "model", "revision", "commit", "dtype", "device", "weight_bytes",
               "load_seconds"} | null,
     "data": str,
     "settings": {name: value},  # every setting that can change a result (merge compares them)
     "shard": {"index": int, "count": int} | null,  # --mmlu-shard I/N; null when unsharded
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
                                 "engine_mode_reason": str | null,
                                 "floor": {"min", "per_subject"} | null,
                                 "no_regression": {"max_drop", "alpha"} | null,
                                 "regression": {"verdict", "line", "base_accuracy",
                                     "new_accuracy", "n", "lost", "gained", "p_worse",
                                     "p_better", "detectable_drop", "power", "alpha",
                                     "max_drop", "discordance", "too_small"} (no-regression),
                                 "judged_at_merge": [gate] (in a shard), "unsharded_n": int
                                 (in a shard: the whole evaluation's question count),
                                 "breaches": [str],
                                 "questions": [{"subject", "index", "target", "prediction",
                                                "loglikelihoods": [4 floats, A-D]}]}]}]}

A merged report (``pytest-mmlu merge``) has ``shard`` null, ``merged_from`` (the shard
reports) and per evaluation ``shards``: each shard's n, peak, batch size and seconds.

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


def format_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return [fmt(headers), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]


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
    from .merge import union_by_nodeid

    merged = dict(new)
    merged["tests"] = union_by_nodeid(old["tests"], new["tests"])
    return merged


def evaluation_entry(result: Any, marks: Any, verdicts: list) -> dict[str, Any]:
    """One evaluation as the report holds it: the result, the gates declared on it (so that
    ``pytest-mmlu merge`` can judge them again on the whole) and what they concluded."""
    entry = result.to_dict()
    entry["floor"] = None if marks.floor is None else {
        "min": marks.floor.overall, "per_subject": dict(marks.floor.per_subject)}
    entry["no_regression"] = None if marks.no_regression is None else {
        "max_drop": marks.no_regression.max_drop, "alpha": marks.no_regression.alpha,
        "against": marks.no_regression.against}
    entry["breaches"] = [v.line for v in verdicts if v.fails]
    deferred = [v.detail["gate"] for v in verdicts if v.kind == "deferred"]
    if deferred:
        entry["judged_at_merge"] = deferred
    from .gates import REGRESSION_KINDS

    for v in verdicts:
        if v.kind in REGRESSION_KINDS:
            entry["regression"] = dict(v.detail)
    return entry
