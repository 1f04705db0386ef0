"""Model variants: the release and its quantized or adapted builds, gated in one session.

A ``Variant`` is what is loaded on top of the model folder: a quantization method and a PEFT
adapter (optionally merged into the weights). ``--mmlu-quantization``/``--mmlu-adapter`` set
the session's variant; ``@pytest.mark.mmlu_variant(...)`` and ``mmlu.evaluate(quantization=...)``
name others. ``FULL`` is the model as published: no quantization, no adapter.

Light on purpose (no torch): settings and markers validate with it at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# torchao's weight-only methods run on CPU and CUDA; bitsandbytes' on CUDA only.
QUANTIZATIONS = ("none", "int8", "int4", "fp8", "nf4", "bnb-int8")


def parse_quantization(raw: Any) -> str:
    if raw not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {raw!r}")
    return str(raw)


def parse_adapter(raw: Any) -> str:
    """A PEFT adapter folder (adapter_config.json inside), as an absolute path."""
    if not isinstance(raw, (str, Path)) or not str(raw):
        raise ValueError(f"adapter must be a folder path, got {raw!r}")
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise ValueError(f"adapter folder {str(path)!r} does not exist")
    if not (path / "adapter_config.json").is_file():
        raise ValueError(f"{str(path)!r} has no adapter_config.json: not a PEFT adapter folder")
    return str(path.resolve())


def parse_merge_adapter(raw: Any) -> bool:
    if not isinstance(raw, bool):
        raise ValueError(f"merge_adapter must be True or False, got {raw!r}")
    return raw


@dataclass(frozen=True)
class Variant:
    quantization: str = "none"
    adapter: str | None = None
    merge_adapter: bool = False

    @property
    def is_full(self) -> bool:
        return self.quantization == "none" and self.adapter is None

    @property
    def label(self) -> str:
        """'full', 'int8', 'adapter lora-v2', 'int8 + adapter lora-v2 (merged)'."""
        parts = [] if self.quantization == "none" else [self.quantization]
        if self.adapter is not None:
            parts.append(f"adapter {Path(self.adapter).name}" + (" (merged)" if self.merge_adapter else ""))
        return " + ".join(parts) or "full"

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "quantization": self.quantization,
            "adapter": self.adapter,
            "merge_adapter": self.merge_adapter,
        }


FULL = Variant()


def make_variant(base: Variant, quantization: Any = None, adapter: Any = None, merge_adapter: Any = None) -> Variant:
    """``base`` with the given fields replaced (None keeps the base's); ValueError on a bad one.
    ``adapter=False`` drops the base's adapter."""
    q = base.quantization if quantization is None else parse_quantization(quantization)
    if adapter is False:
        a = None
    else:
        a = base.adapter if adapter is None else parse_adapter(adapter)
    if merge_adapter is not None:
        merge = parse_merge_adapter(merge_adapter)
        if merge and a is None:
            raise ValueError("merge_adapter=True needs an adapter")
    else:  # the base's choice, for the base's or a new adapter; none to merge once it is dropped
        merge = base.merge_adapter and a is not None
    return Variant(q, a, merge and a is not None)


def session_variant(settings: Any) -> Variant:
    """The variant the session's options name (``--mmlu-quantization``, ``--mmlu-adapter``)."""
    return Variant(settings.quantization, settings.adapter, bool(settings.merge_adapter and settings.adapter))
