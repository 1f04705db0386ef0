"""An evaluation's figures as JUnit XML test properties."""

from __future__ import annotations

from typing import Any

from ..mmlu.results import EvaluationResult


def junit_properties(result: EvaluationResult) -> list[tuple[str, Any]]:
    """``mmlu_*`` figures for the test's ``user_properties`` (JUnit XML)."""
    lo, hi = result.ci95
    return [
        (f"mmlu_{key}", value)
        for key, value in (
            ("accuracy", round(result.accuracy, 6)),
            ("n", result.n),
            ("ci95_low", round(lo, 6)),
            ("ci95_high", round(hi, 6)),
            ("peak_memory_bytes", result.peak_memory_bytes),
            ("budget_bytes", result.budget_bytes),
            ("batch_size", result.batch_size),
            ("seconds", round(result.seconds, 3)),
            ("from_cache", result.from_cache),
        )
    ]
