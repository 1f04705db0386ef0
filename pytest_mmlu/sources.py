"""Where a model or data comes from: a local path, or a Hugging Face hub id ("name" or
"namespace/name"). One rule, for models and data alike, told without touching the network."""

from __future__ import annotations

import os

LOCAL_FILE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".csv", ".parquet")


def looks_like_path(value: str) -> bool:
    """A local file or folder, not a hub id: it exists, or it is written as a path (``/``,
    ``.``, ``~``, a trailing slash, more than one ``/``, a backslash, an archive's suffix)."""
    if os.path.exists(value):
        return True
    if value.startswith(("/", ".", "~")) or value.endswith(("/", "\\")):
        return True
    return value.count("/") > 1 or "\\" in value or value.endswith(LOCAL_FILE_SUFFIXES)
