"""Result cache: an evaluation re-run with nothing changed is read back, not recomputed.

An entry is found by a hash of the evaluation's identity (``identity.py``: the model's and
the adapter's content, the variant, dtype and device kind as loaded, the prompts, the data,
the questions, the shots, the scoring version and every library that can change a score)
and the conditions its figures were measured under (budget, batch size, device map, remote
code, pickle). It is served only where :func:`identity.difference` finds the stored identity
the same as the asked one for ``identity.CACHE`` (every field) and the conditions are equal:
the hash finds, the identity decides. An evaluation whose identity is not fully known (a hub
model whose commit cannot be resolved) is neither served nor stored.

Entries are JSON files named by the hash; an entry that does not parse, or whose identity
or conditions differ, is ignored and overwritten. Results with NaN or inf scores are never
stored nor served. A result served is given back as the spec that asked for it asks
(:func:`as_asked`): the same questions under another limit, order or label.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..identity import CACHE, FIELDS, difference
from ..markers import EvalSpec, TaskSpec
from ..mmlu.results import EvaluationResult
from .report import write_json_atomic

ENTRY_VERSION = 2  # entries of another shape are ignored (and overwritten)


def entry_name(identity: Mapping[str, Any], conditions: Mapping[str, Any]) -> str:
    text = json.dumps(
        {"identity": identity, "conditions": conditions, "version": ENTRY_VERSION}, sort_keys=True, default=list
    )
    return hashlib.sha256(text.encode()).hexdigest()


class ResultCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, identity: Mapping[str, Any], conditions: Mapping[str, Any]) -> EvaluationResult | None:
        if not all(name in identity for name in FIELDS):
            return None  # an unknown part: never the same as anything
        path = self.root / f"{entry_name(identity, conditions)}.json"
        try:
            entry = json.loads(path.read_text())
            if entry.get("version") != ENTRY_VERSION or entry.get("conditions") != dict(conditions):
                return None
            if difference(entry.get("identity"), identity, CACHE) is not None:
                return None
            result = EvaluationResult.from_dict(entry["result"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # missing, corrupt or foreign: recompute and overwrite
        if result.non_finite_questions:
            return None  # never serve NaN/inf scores: a fixed engine must get to run again
        result.from_cache = True
        result.identity = dict(entry["identity"])
        return result

    def put(self, identity: Mapping[str, Any], conditions: Mapping[str, Any], result: EvaluationResult) -> None:
        if result.non_finite_questions or not all(name in identity for name in FIELDS):
            return  # an error, not a result; or an evaluation that cannot be told apart: not kept
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            self.root / f"{entry_name(identity, conditions)}.json",
            {
                "version": ENTRY_VERSION,
                "identity": dict(identity),
                "conditions": dict(conditions),
                "result": result.to_dict(),
            },
        )

    def clear(self) -> None:
        for path in self.root.glob("*.json"):
            os.unlink(path)


def measured_under(settings: Any, budget: int | None) -> dict[str, Any]:
    """What a cached result must also have been measured under: its peak and batches depend
    on them, its scores do not."""
    return {
        "budget": budget,
        "batch_size": settings.batch_size,
        "device_map": settings.device_map,
        "trust_remote_code": settings.trust_remote_code,
        "allow_pickle": settings.allow_pickle,
    }


def as_asked(result: EvaluationResult, spec: EvalSpec | TaskSpec) -> EvaluationResult:
    """A result of the same evaluation (the same questions: one identity) as ``spec`` asks for it:
    its subjects in the spec's order, its limit and label (``limit=None`` and ``limit=50`` of a
    20-question subject, say, are one evaluation); an lm-eval task's as asked (its metric by
    name or by default, its limit)."""
    if isinstance(spec, TaskSpec):
        task = {**(result.task or {}), "asked": spec.asked}
        return dataclasses.replace(result, limit=spec.limit, label=spec.task, task=task)  # type: ignore[arg-type]

    order = {subject: i for i, subject in enumerate(spec.subjects)}
    questions = sorted(result.questions, key=lambda q: (order.get(q.subject, len(order)), q.index))
    return dataclasses.replace(
        result,
        subjects=spec.subjects,
        limit=spec.limit,
        label=spec.shown_label,
        questions=questions,
    )
