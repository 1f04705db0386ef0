"""Where a model or data comes from: a local path, or a Hugging Face hub id.
"""

from __future__ import annotations

import os


def looks_like_path(value: str) -> bool:
    """Tell a local folder from a hub id ('org/name') without touching the network."""
    if os.path.exists(value):
        return True
    if value.startswith(("/", "./", "../", "~", ".\\")) or value.endswith(("/", "\\")):
        return True
    return value.count("/") > 1 or "\\" in value
