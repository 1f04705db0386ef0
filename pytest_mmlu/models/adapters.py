"""PEFT adapters (LoRA, IA3, ...) applied on the loaded base model.

The engine scores the transformers model itself: PEFT injects its adapter layers into the
base model's modules, so ``get_base_model()`` is the adapted model, with the base's own
forward (its attention hooks and ``logits_to_keep``) and nothing of PEFT's wrapper in the
way. Prompt-learning adapters (prefix tuning, prompt tuning) add virtual tokens in the
wrapper's forward instead, which the engine's packed rows cannot carry: they are refused.
Merging (``--mmlu-merge-adapter``) folds the adapter into the weights: the same model up to
rounding, and as fast as the base.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from ..text import first_line
from .content import ContentHashes

INSTALL = "pip install 'pytest-mmlu[peft]'"


class AdapterError(Exception):
    """The adapter cannot be applied; one line naming it and what to do."""


def adapter_info(path: str) -> dict[str, Any]:
    """What the adapter folder declares (type, base model, rank) and the sha256 of its files
    (the evaluation's identity holds the same), for the report."""

    try:
        config = json.loads((Path(path) / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise AdapterError(f"adapter {path}: unreadable adapter_config.json ({exc})") from None
    return {
        "path": path,
        "type": config.get("peft_type"),
        "base_model": config.get("base_model_name_or_path"),
        "r": config.get("r"),
        "sha256": ContentHashes().folder(Path(path)).removeprefix("sha256:"),
    }


def apply_adapter(model: Any, path: str, merge: bool) -> Any:
    """``model`` with the adapter at ``path`` in it (merged into the weights if ``merge``)."""
    try:
        from peft import PeftConfig, PeftModel
    except ImportError:
        raise AdapterError(f"--mmlu-adapter needs peft, which is not installed: {INSTALL}") from None
    try:
        config = PeftConfig.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001 - peft raises ValueError/OSError/TypeError
        raise AdapterError(f"adapter {path}: {first_line(exc)}") from None
    if config.is_prompt_learning:
        raise AdapterError(
            f"adapter {path} is {config.peft_type.value}, a prompt-learning adapter (virtual "
            f"tokens added by PEFT's own forward): pytest-mmlu scores adapters that change the "
            f"model's layers (LoRA, IA3, ...)"
        )
    try:
        with warnings.catch_warnings():
            # peft reads transformers' deprecated is_gradient_checkpointing: a FutureWarning
            # in every user's test summary that says nothing about their model.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            wrapped = PeftModel.from_pretrained(model, path)
        return wrapped.merge_and_unload() if merge else wrapped.get_base_model()
    except Exception as exc:  # noqa: BLE001 - shape mismatches, unsupported layers
        raise AdapterError(f"cannot apply adapter {path}: {first_line(exc)}") from None
