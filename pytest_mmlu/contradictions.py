"""Options that contradict each other: refused at start-up, one line naming both and where each
came from. The README lists them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .sources import looks_like_path

if TYPE_CHECKING:
    from .settings import Settings

from collections.abc import Callable
from pathlib import Path

# -- options that contradict each other: refused at start-up, one line naming both ---------------
PRECEDENCE = ("ini key", "environment variable", "command line")  # lowest first


def _rank(settings: Settings, name: str) -> int:
    source = settings.source_of(name)
    return next((i for i, kind in enumerate(PRECEDENCE) if source.startswith(kind)), -1)


def _both(settings: Settings, a: str, b: str, why: str) -> str:
    def named(name: str) -> str:
        value = getattr(settings, name)
        shown = "" if value is True else f" {value}"
        return f"--mmlu-{name.replace('_', '-')}{shown} (from {settings.source_of(name)})"

    return f"{named(a)} contradicts {named(b)}: {why}"


def _same_file(settings: Settings) -> str | None:
    # The baseline counts even when this run only reads it: a report written over it would
    # replace the last release's answers with this run's, whatever the verdict.
    outputs = [name for name in ("report", "baseline", "chart") if getattr(settings, name)]
    for i, a in enumerate(outputs):
        for b in outputs[i + 1 :]:
            if Path(getattr(settings, a)).resolve() == Path(getattr(settings, b)).resolve():
                return _both(settings, a, b, "they name the same file, and each would overwrite the other")
    return None


CONTRADICTIONS: tuple[Callable[[Settings], str | None], ...] = (
    lambda s: (
        None
        if not (s.fewshot_as_multiturn and s.chat_template is None)
        # lm-eval's rule
        else (
            f"--mmlu-fewshot-as-multiturn from {s.source_of('fewshot_as_multiturn')} needs --mmlu-chat-template "
            "(few-shot turns exist only in a chat)"
        )
    ),
    lambda s: (
        None
        if not (s.update_baseline and not s.baseline)
        else ("--mmlu-update-baseline needs --mmlu-baseline PATH (the file to write)")
    ),
    lambda s: (
        None
        if not (s.shard is not None and s.update_baseline)
        else _both(
            s,
            "update_baseline",
            "shard",
            "a shard holds part of each evaluation, and a baseline must hold the "
            "whole: make it from the merged report (pytest-mmlu merge -o merged.json; --mmlu-baseline merged.json)",
        )
    ),
    lambda s: (
        None
        if not (s.shard is not None and s.baseline and not s.update_baseline)
        else _both(
            s,
            "baseline",
            "shard",
            "a shard judges no regression (a part cannot); give the baseline to pytest-mmlu merge --baseline",
        )
    ),
    lambda s: (
        None
        if not (s.shard is not None and s.report_lm_eval)
        else _both(
            s,
            "report_lm_eval",
            "shard",
            "lm-eval output of a shard would hold part of each task; write it "
            "from the whole: pytest-mmlu merge --lm-eval DIR",
        )
    ),
    lambda s: (
        None
        if not (s.merge_adapter and not s.adapter)
        else (
            f"--mmlu-merge-adapter (from {s.source_of('merge_adapter')}) needs --mmlu-adapter: there is no "
            "adapter to merge (a test's @pytest.mark.mmlu_variant(adapter=..., merge_adapter=True) merges its own)"
        )
    ),
    lambda s: (
        None
        if not (s.no_cache and s.cache_dir)
        else _both(s, "no_cache", "cache_dir", "one turns the result cache off, the other says where it lives")
    ),
    lambda s: (
        None
        if not (
            s.require_model
            and s.allow_skip
            and "require_model" in s.sources
            and s.source_of("require_model") != "environment variable CI"
            and _rank(s, "require_model") >= _rank(s, "allow_skip")
        )
        else _both(s, "require_model", "allow_skip", "one stops a run without a model, the other lets its tests skip")
    ),
    lambda s: (
        None
        if not (s.device == "cpu" and s.quantization in ("nf4", "bnb-int8"))
        else _both(
            s, "quantization", "device", "bitsandbytes runs on CUDA only: on CPU use int8, int4 or fp8 (torchao)"
        )
    ),
    lambda s: (
        None
        if not (s.device == "cpu" and s.device_map == "auto")
        else _both(s, "device_map", "device", "a device map spreads a model over GPUs")
    ),
    lambda s: (
        None
        if not (s.revision and s.model and looks_like_path(s.model))
        else _both(
            s,
            "revision",
            "model",
            "a revision names a hub commit, branch or tag, and this model is a local "
            "folder (transformers would ignore it)",
        )
    ),
    _same_file,
)
