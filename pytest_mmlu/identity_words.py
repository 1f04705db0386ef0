"""The fields of an identity (``identity.py``) in words a person reads: what a refusal says
differs (``another library version (torch 2.5 in the baseline, torch 2.6 in this run)``)."""

from __future__ import annotations

import json
from typing import Any

from .prompt_identity import prompt_words

PLAIN_NAMES = {
    "model": "model content",
    "adapter_name": "adapter",
    "merge_adapter": "adapter merge",
    "shots": "number of shots",
    "scoring": "scoring version",
    "software": "library version",
    "device": "device kind",
    "task": "lm-eval task",
}


UNKNOWN = object()


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def software_words(a: Any, b: Any) -> tuple[str, str]:
    """Two library-version fields in words, by the first package that differs."""
    a, b = a or {}, b or {}
    for package in sorted(set(a) | set(b)):
        if a.get(package) != b.get(package):
            return f"{package} {a.get(package) or 'not installed'}", f"{package} {b.get(package) or 'not installed'}"
    return str(a), str(b)  # pragma: no cover - equal dicts differ


def words(name: str, value: Any) -> str:
    if value is UNKNOWN:
        return f"no recorded {name}"
    if name == "prompt":
        return prompt_words(value)
    if name == "adapter":
        return "no adapter" if value is None else f"adapter {str(value)[:19]}"
    if name == "adapter_name":
        return "no adapter" if value is None else str(value)
    if name in ("model", "data") and isinstance(value, str) and len(value) > 24:
        return value[:19] if value.startswith(("sha256:", "hub:")) else value[:12]
    if name == "merge_adapter":
        return "merged" if value else "not merged"
    return str(value)


TASK_PARTS = ("name", "metric", "versions", "configs", "include_path")


def task_words(a: Any, b: Any) -> tuple[str, str]:
    """Two task fields in words, by the first part that differs (``metric acc``, ``configs ...``)."""
    if a is None or b is None:
        return ("MMLU" if a is None else f"lm-eval task {a.get('name')}"), (
            "MMLU" if b is None else f"lm-eval task {b.get('name')}"
        )
    for part in TASK_PARTS:
        if canonical(a.get(part)) != canonical(b.get(part)):
            return f"{part} {str(a.get(part))[:60]}", f"{part} {str(b.get(part))[:60]}"
    return str(a)[:60], str(b)[:60]  # pragma: no cover - equal parts, unequal dicts
