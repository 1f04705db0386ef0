"""CI shards: ``--mmlu-shard i/n`` evaluates the questions of shard i of n; ``pytest-mmlu merge``
(``merge.py``) joins the n reports and judges the whole.

A question's shard is a hash of ``"subject/index"`` modulo n, never its position in a list:
the assignment does not depend on which subjects, shots or limit an evaluation asks for,
so adding subjects (or tests) moves no question between shards, the same question lands in
the same shard in every test, and the n shards together hold each question exactly once.

In a shard, budgets are judged (each job's peak is real) while floors and no-regression are
recorded and marked "judged at merge": a part cannot pass or fail a floor on the whole.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .results import EvaluationResult


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based, as in a CI matrix ``[1, 2, 3]``) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, subject: str, index: int) -> bool:
        return shard_of(subject, index, self.count) == self.index

    def to_dict(self) -> dict[str, int]:
        return {"index": self.index, "count": self.count}


def parse_shard(raw: str) -> Shard:
    """``"2/3"`` -> Shard(2, 3); ValueError saying the expected form otherwise."""
    found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", raw)
    if not found:
        raise ValueError("expected I/N, e.g. 1/3 (shard I of N, counted from 1)")
    index, count = int(found.group(1)), int(found.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"shard {index} of {count} does not exist: I must be 1 to N and N at least 1")
    return Shard(index, count)


def shard_of(subject: str, index: int, count: int) -> int:
    """The shard (1-based) that evaluates question ``index`` of ``subject``'s test split."""
    digest = hashlib.sha256(f"{subject}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


class ShardedData:
    """An ``MmluData`` whose test questions are only those of one shard.

    Few-shot examples and the data fingerprint are the whole data's: every shard's prompts
    are the unsharded run's prompts, and the fingerprint identifies the data, not the part."""

    def __init__(self, data: Any, shard: Shard) -> None:
        self._data = data
        self.shard = shard

    def test_questions(self, subject: str, limit: int | None) -> list:
        return [q for q in self._data.test_questions(subject, limit) if self.shard.holds(subject, q.index)]

    def unsharded_count(self, subjects: Iterable[str], limit: int | None) -> int:
        """How many questions the whole evaluation has (all shards together)."""
        return sum(len(self._data.test_questions(s, limit)) for s in subjects)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._data, name)


def empty_result(
    spec: Any,
    budget_bytes: int | None,
    fingerprint: str,
    identity: Any = None,
    subjects: tuple[str, ...] | None = None,
    shots: int | None = None,
    task: dict[str, Any] | None = None,
    variant: str = "full",
) -> EvaluationResult:
    """The result of an evaluation none of whose questions falls in this shard: nothing ran
    (no model load for it, peak 0), yet the report keeps its row for the merge. ``subjects``,
    ``shots`` and ``task``: an lm-eval task evaluation's (its tasks, as loaded); ``variant``: the
    model variant it is of (every shard's entry names the same)."""

    return EvaluationResult(
        subjects=spec.subjects if subjects is None else subjects,
        shots=spec.shots if task is None else shots,
        limit=spec.limit,
        label=spec.shown_label,
        questions=[],
        peak_memory_bytes=0,
        budget_bytes=budget_bytes,
        batch_size=0,
        batch_sizes=[],
        seconds=0.0,
        tokens=0,
        device="-",
        dtype="-",
        data_fingerprint=fingerprint,
        identity=identity,
        task=task,
        variant=variant,
    )
