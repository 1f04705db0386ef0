"""Records: what a run keeps of each MMLU test, the same on every path.

A test that declares an MMLU evaluation or gate, or asks for an MMLU fixture, has one record
whatever happens to it (passed, failed before evaluating, errored in set-up, skipped, crashed
in an xdist worker, never run)::

    {"nodeid": str, "outcome": "passed" | "failed" | "error" | "skipped" | "xfailed" | "xpassed"
                | "crashed" | "not run",
     "gates": {"evaluation", "budget_bytes", "floor", "no_regression": [rule...], "variant"},
     "evaluations": [entry...], "verdicts": [...], "breaches": [str], "cause": str (optional),
     "strict_xfail": bool (optional: a shard's strict xfail passed for want of deferred gates),
     "xfail_excuses_gates": bool (marked xfail: would a failing gate be its expected failure,
                                  i.e. its raises= names no exception or pytest.fail's)}

An evaluation entry is ``EvaluationResult.to_dict()`` (its ``identity`` included) with what
the judge wrote (``judge.apply``). ``role: "reference"`` marks the full-precision evaluation
a ``mmlu_no_regression(against="full")`` gate compares with; ``shard: "i/n"`` an entry made in
a CI shard (``unsharded_n``: the whole evaluation's question count). Records are plain dicts,
so xdist ships them with each test's report and reports hold them as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .markers import EvalSpec, Floor, ItemMarks, NoRegression, TaskSpec

REFERENCE = "reference"


def new_record(nodeid: str, marks: ItemMarks | None) -> dict[str, Any]:
    return {
        "nodeid": nodeid,
        "outcome": None,
        "gates": None if marks is None else marks.to_dict(),
        "evaluations": [],
        "verdicts": [],
        "breaches": [],
    }


def gates_of(record: Mapping[str, Any]) -> ItemMarks:
    """The gates a record declares; for a record written before they were recorded per test,
    what its first entry says (budget, floor, the one no-regression rule)."""
    declared = record.get("gates")
    if declared is not None:
        return ItemMarks.from_dict(declared)
    entries = [e for e in record.get("evaluations", []) if not is_reference(e)]
    if not entries:
        return ItemMarks()
    first = entries[0]
    floor, rule = first.get("floor"), first.get("no_regression")
    return ItemMarks(
        spec=EvalSpec.from_dict(first) if first.get("shots") is not None else None,
        budget_bytes=first.get("budget_bytes"),
        floor=None if floor is None else Floor.from_dict(floor),
        no_regressions=() if rule is None else (NoRegression.from_dict(rule),),
    )


def is_reference(entry: Mapping[str, Any]) -> bool:
    return entry.get("role") == REFERENCE


def spec_key(d: Mapping[str, Any]) -> tuple:
    """What an entry or a declared evaluation (``spec.to_dict()``) asked for: MMLU's subjects,
    shots and limit, or an lm-eval task's name, shots, limit and metric as asked."""
    task = d.get("task")
    if isinstance(task, Mapping):  # an entry: what it asked is in its task description
        asked = task.get("asked") or {}
        return ("task", task.get("name"), asked.get("shots"), asked.get("limit"), asked.get("metric"))
    if task is not None:  # a declared task evaluation
        return ("task", task, d["shots"], d["limit"], d.get("metric"))
    return ("mmlu", tuple(d["subjects"]), d["shots"], d["limit"])


def same_spec(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return spec_key(a) == spec_key(b)


def covered(entry: Mapping[str, Any]) -> list[str]:
    """What per-subject floors an entry can answer: its subjects (an lm-eval evaluation's
    tasks) and the groups among them."""
    return [*entry["subjects"], *((entry.get("task") or {}).get("groups") or {})]


def reference_for(entries: Sequence[Mapping[str, Any]], entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The full-precision reference entry recorded for ``entry`` (same subjects, shots, limit)."""
    return next((e for e in entries if is_reference(e) and same_spec(e, entry)), None)


def failure_entry(
    spec: EvalSpec | TaskSpec | None,
    budget_bytes: int | None,
    kind: str,
    line: str,
    identity: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An evaluation that could not run (budget below batch 1, model or data error): still a
    summary and report row. ``spec`` is None when the test declared none (mmlu_model alone)."""
    entry: dict[str, Any] = {
        "subjects": list(spec.subjects) if spec else [],
        "label": spec.label if spec else "-",
        "shots": spec.shots if spec else None,
        "limit": spec.limit if spec else None,
        "n": 0,
        "accuracy": None,
        "ci95": None,
        "peak_memory_bytes": None,
        "budget_bytes": budget_bytes,
        "batch_size": 0,
        "seconds": 0.0,
        "verdicts": [{"kind": kind, "line": line}],
        "breaches": [line],
        "questions": [],
    }
    if isinstance(spec, TaskSpec):
        entry["task"] = {"name": spec.task, "asked": spec.asked}
    if identity is not None:
        entry["identity"] = dict(identity)
    return entry


def union_by_nodeid(old: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Whole-test records of two parts: ``new``'s record of a test wins, nothing else is lost."""
    joined = {t["nodeid"]: dict(t) for t in old}
    joined.update((t["nodeid"], dict(t)) for t in new)
    return [joined[k] for k in sorted(joined)]


def own_evaluations(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A record's evaluations, less the references they were compared with."""
    return [e for e in record.get("evaluations", []) if not is_reference(e)]


def regression_details(entry: Mapping[str, Any], compared: bool = False) -> list[dict[str, Any]]:
    """The details of every no-regression verdict on a judged entry (``regressions`` with
    several rules, else ``regression``); ``compared``: only those that found something to
    compare with."""
    found = entry.get("regressions") or ([entry["regression"]] if entry.get("regression") else [])
    return [d for d in found if "base_accuracy" in d] if compared else list(found)
