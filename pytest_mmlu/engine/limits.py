"""What a model's config says about the inputs it can score."""

from __future__ import annotations

from typing import Any

DEFAULT_MAX_LENGTH = 2048  # lm-eval's default when neither config nor tokenizer says


def resolve_max_length(config: Any, tokenizer: Any = None) -> int:
    """lm-eval's rule: config n_positions / max_position_embeddings / n_ctx, then tokenizer."""
    cfg = getattr(config, "text_config", None) or config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, attr, None)
        if value is not None:
            return int(value)
    model_max = getattr(tokenizer, "model_max_length", None)
    if model_max is not None and model_max < 10**20:
        return int(model_max)
    return DEFAULT_MAX_LENGTH


def sliding_window(config: Any) -> int | None:
    """The attention window of any layer, or None when every layer sees the whole row."""
    cfg = getattr(config, "text_config", None) or config
    window = getattr(cfg, "sliding_window", None)
    if not window or getattr(cfg, "use_sliding_window", True) is False:
        return None
    layer_types = getattr(cfg, "layer_types", None)
    if layer_types is not None and "sliding_attention" not in layer_types:
        return None
    return int(window)
