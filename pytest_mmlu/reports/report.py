"""The JSON report file: its schema, atomic writes and reading; the report header.

What a run emits at its end (summary, report, baseline, GitHub summary, chart) is in
``outputs/``; a test's record is described in ``records.py``.

JSON report (``--mmlu-report PATH``), schema 1::

    {"schema": 1, "pytest_mmlu_version": str, "scoring_version": int, "created": ISO-8601,
     "model": {"name", "model", "revision", "commit", "dtype", "device", "weight_bytes",
               "load_seconds"} | null,
     "data": str,
     "settings": {name: value},  # every setting that can change a result (merge compares them)
     "shard": {"index": int, "count": int} | null,  # --mmlu-shard I/N; null when unsharded
     "tests": [{"nodeid": str,
                "outcome": "passed" | "failed" | "error" | "skipped" | "xfailed" | "xpassed"
                           | "crashed" | "not run",
                "gates": {"evaluation": {"subjects", "shots", "limit", "label"} | null,
                          "budget_bytes": int | null, "floor": {"min", "per_subject"} | null,
                          "no_regression": [{"max_drop", "alpha", "against"}],
                          "variant": {"quantization", "adapter", "merge_adapter"} | null},
                "verdicts": [{"kind", "line"}], "breaches": [str],  # the test's own gates
                "evaluations": [{"subjects": [str], "label": str, "shots": int,
                                 "limit": int | null, "n": int, "accuracy": float,
                                 "ci95": [lo, hi], "per_subject": {subject: {"accuracy", "n"}},
                                 "per_category": {category: {"accuracy", "n"}},
                                 "peak_memory_bytes": int, "budget_bytes": int | null,
                                 "batch_size": int, "batch_sizes": [int], "seconds": float,
                                 "tokens": int, "device": str, "dtype": str,
                                 "data_fingerprint": str, "weight_bytes": int,
                                 "from_cache": bool, "engine_mode": "prefix" | "plain",
                                 "engine_mode_reason": str | null, "variant": str,
                                 "prompt_format": {...} | null,
                                 "identity": {...},  # what exactly was evaluated (identity.py)
                                 "role": "reference",  # only the full-precision reference
                                 "floor": {"min", "per_subject"} | null,
                                 "no_regression": {"max_drop", "alpha", "against"} | null,
                                 "regression": {"verdict", "line", "base_accuracy",
                                     "new_accuracy", "n", "lost", "gained", "p_worse",
                                     "p_better", "detectable_drop", "power", "alpha",
                                     "max_drop", "discordance", "too_small", "against"}
                                     (no-regression; "regressions": all, with several),
                                 "judged_at_merge": [gate], "shard": "i/n", "unsharded_n":
                                 int (in a shard: the whole evaluation's question count),
                                 "verdicts": [{"kind", "line"}], "breaches": [str],
                                 "questions": [{"subject", "index", "target", "prediction",
                                                "loglikelihoods": [4 floats, A-D],
                                                "is_greedy": [4 bools]}]}]}]}

A merged report (``pytest-mmlu merge``) has ``shard`` null, ``merged_from`` (the shard
reports) and per evaluation ``shards``: each shard's n, peak, batch size and seconds.

``index`` is the 0-based row in the subject's test split; ``target`` and
``prediction`` are 0-3 (A-D). An evaluation that could not run (budget below batch 1,
model load or data error) is an entry with ``n`` 0, ``accuracy`` and ``ci95`` null, and the
error line as its breach; ``subjects`` is empty and ``shots`` null for a test that declared
no evaluation (the ``mmlu_model`` fixture alone). Every MMLU test has its record, one that
never evaluated too (skipped, failed or errored before evaluating, crashed, never run).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from .. import SCORING_VERSION, __version__

SCHEMA_VERSION = 1


def report_header() -> dict[str, Any]:
    """What every report starts with, a run's or a merge's: the schema, the versions, the time."""
    return {
        "schema": SCHEMA_VERSION,
        "pytest_mmlu_version": __version__,
        "scoring_version": SCORING_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


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
        raise ReportError(
            f"{path}: report schema {data['schema']!r} is not supported; this "
            f"pytest-mmlu reads schema {SCHEMA_VERSION}. Re-create the report with it."
        )
    return data


def joined_model_info(ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> dict[str, Any] | None:
    """The report's model entry of two parts (xdist workers, shards): the first's, with every
    variant either loaded (workers load different variants)."""
    if not ours or not theirs:
        return ours or theirs
    variants = {**(theirs.get("variants") or {}), **(ours.get("variants") or {})}
    return {**ours, **({"variants": variants} if variants else {})}


# Settings that only say where a job writes or what it may skip: they never change a result.
JOB_ONLY_SETTINGS = frozenset(
    {
        "report",
        "baseline",
        "update_baseline",
        "cache_dir",
        "no_cache",
        "chart",
        "require_model",
        "allow_skip",
        "shard",
        "report_lm_eval",
        "sources",
    }
)


def result_settings(settings: Any) -> dict[str, Any]:
    """The settings of a run that can change a result (all but where outputs go): the report
    records them, and shards made with different ones are not merged."""

    return {f.name: _plain(getattr(settings, f.name)) for f in fields(settings) if f.name not in JOB_ONLY_SETTINGS}


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)
