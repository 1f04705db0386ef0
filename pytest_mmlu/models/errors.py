"""The one error of loading a model, and how messages name the model."""

from __future__ import annotations

from ..sources import looks_like_path


class ModelLoadError(Exception):
    """The model could not be loaded; the message names it and says what to do."""


def where_model(name: str) -> str:
    """How messages name the model: a folder, or a hub id."""
    return f"model folder {name}" if looks_like_path(name) else f"model {name!r} from the Hugging Face hub"
