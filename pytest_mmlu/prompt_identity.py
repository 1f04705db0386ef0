"""The prompt part of an evaluation's identity: what changes the prompts a model reads (a chat
template by its text's sha256, few-shot examples as turns, a system instruction) and nothing
else, and how two differ in words a person reads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def prompt_identity(described: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The prompt part of an identity from a recorded prompt format (``PromptFormat.describe``):
    what changes the prompts, and nothing else (a template named or taken by default renders
    alike; few-shot turns exist only with a template)."""
    d = described or {}
    chat = d.get("chat_template") is not None
    if not chat and not d.get("system_instruction"):
        return None
    return {
        "chat_template_sha256": d.get("chat_template_sha256") if chat else None,
        "fewshot_as_multiturn": bool(d.get("fewshot_as_multiturn")) if chat else None,
        "system_instruction": d.get("system_instruction") or None,
    }


def _prompt_aspects(prompt: Mapping[str, Any] | None) -> dict[str, Any]:
    p = prompt or {}
    return {
        "chat template": p.get("chat_template_sha256"),
        "few-shot as multiturn": p.get("fewshot_as_multiturn"),
        "system instruction": p.get("system_instruction") or None,
    }


def _aspect_words(name: str, value: Any) -> str:
    if value is None:
        return f"no {name}" if name != "few-shot as multiturn" else "no chat template"
    if name == "chat template":
        return f"chat template sha256 {str(value)[:12]}"
    if name == "system instruction":
        return f"system instruction {value if len(value) <= 40 else value[:37] + '...'!r}"
    return "few-shot as separate turns" if value else "few-shot in one user turn"


def prompt_difference(theirs: Mapping[str, Any] | None, ours: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """How two prompt identities differ, each side in words of what differs only
    (``"no chat template"``, ``"chat template sha256 1a2b..."``), or None when they render
    the same prompts."""
    a, b = _prompt_aspects(theirs), _prompt_aspects(ours)
    differs = [k for k in a if a[k] != b[k]]
    if not differs:
        return None
    if a["chat template"] != b["chat template"] and "few-shot as multiturn" in differs:
        differs.remove("few-shot as multiturn")  # follows from the template's presence
    return (", ".join(_aspect_words(k, a[k]) for k in differs), ", ".join(_aspect_words(k, b[k]) for k in differs))


def prompt_words(prompt: Mapping[str, Any] | None) -> str:
    if not prompt:
        return "plain prompts"
    return ", ".join(
        _aspect_words(k, v)
        for k, v in _prompt_aspects(prompt).items()
        if not (k == "few-shot as multiturn" and v is None)
    )
