"""What a model is, by content: the sha256 of every file of a folder that may be loaded, or
the commit a hub revision points to.

Hashing a 14 GB checkpoint takes seconds, so each file's hash is remembered
(``ContentHashes``). A remembered hash is used only where the file is provably the one that
was hashed: the same device and inode, size, modification time **and change time**. The
change time (``st_ctime`` on POSIX) is set by the kernel at every write and every metadata
change, and no program can set it back (``os.utime`` sets the modification time and, by
doing so, moves the change time forward). A file whose times are within ``RACY_SECONDS`` of
the moment it was hashed is not remembered (git's "racy clean" rule: a write in the same
clock tick could leave every time unchanged). Where there is no change time (Windows'
``st_ctime`` is the creation time), nothing is remembered: every file is hashed every run.

Light on purpose (no torch, no transformers): huggingface_hub is imported only for hub ids.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from ..reports.report import write_json_atomic
from ..sources import looks_like_path
from ..text import first_line

# Files in a model folder that are never loaded; anything else counts as model content.
# .pyc/.pyo: Python's compiled copies of code in the folder (written when it is imported,
# stamped with the source's time), never content of their own.
IGNORED_SUFFIXES = (".md", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".pdf", ".lock", ".tmp", ".pyc", ".pyo")
IGNORED_NAMES = ("LICENSE", "LICENSE.txt", "NOTICE", "USE_POLICY")
MEMO_NAME = "content-hashes.json"
RACY_SECONDS = 2.0  # a file changed this recently may change again within the same clock tick
CAN_PROVE_UNCHANGED = os.name == "posix"  # st_ctime is the change time only on POSIX


def _proof(st: os.stat_result) -> list[int]:
    """What must be unchanged for a remembered hash to stand for the file's content."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class ContentHashes:
    """sha256 of files, remembered across runs (``memo_path``) or for this run only (None).

    The memo is read once and written by read-merge-write under a file lock, so xdist workers
    and parallel jobs sharing it never drop each other's hashes."""

    def __init__(self, memo_path: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self.memo_path = memo_path
        self._clock = clock
        self._memo: dict[str, Any] = self._read() if memo_path is not None else {}
        self._new = False
        self._folders: dict[str, str] = {}  # this run: a folder is hashed at most once

    def _read(self) -> dict[str, Any]:
        try:
            memo = json.loads(self.memo_path.read_text())  # type: ignore[union-attr]
        except (OSError, ValueError):
            return {}
        return memo if isinstance(memo, dict) else {}

    def file(self, path: Path) -> str:
        """The file's sha256: remembered only where the file is provably unchanged."""
        key = str(path.resolve())
        before = os.stat(path)
        known = self._memo.get(key)
        if CAN_PROVE_UNCHANGED and isinstance(known, dict) and known.get("proof") == _proof(before):
            return str(known["sha256"])
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        after = os.stat(path)
        racy = self._clock() - max(after.st_mtime, after.st_ctime) < RACY_SECONDS
        if CAN_PROVE_UNCHANGED and _proof(before) == _proof(after) and not racy:
            self._memo[key] = {"proof": _proof(after), "sha256": digest.hexdigest()}
            self._new = True
        else:
            self._memo.pop(key, None)
        return digest.hexdigest()

    def folder(self, folder: Path) -> str:
        """``sha256:<hex>`` over the names and contents of every file of the folder, subfolders
        included (remote code in packages, sharded or adapter weights), that may be loaded."""
        folder = Path(folder)
        known = self._folders.get(str(folder.resolve()))
        if known is not None:
            return known
        h = hashlib.sha256()
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            hidden = any(part.startswith(".") or part == "__pycache__" for part in relative.parts)
            if may_be_loaded(path) and not hidden:
                h.update(f"{relative.as_posix()}:{self.file(path)}\n".encode())
        found = "sha256:" + h.hexdigest()
        self._folders[str(folder.resolve())] = found
        self.save()
        return found

    def save(self) -> None:
        if self.memo_path is None or not self._new:
            return

        self.memo_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.memo_path) + ".lock"):
            merged = {**self._read(), **self._memo}
            write_json_atomic(self.memo_path, merged)
        self._memo = merged
        self._new = False


def may_be_loaded(path: Path) -> bool:
    """Every regular file but documentation and hidden files: a file type we do not know
    (a new tokenizer format, remote code) must change the content, never be overlooked."""
    name = path.name
    return (
        path.is_file()
        and not name.startswith(".")
        and name not in IGNORED_NAMES
        and not name.lower().endswith(IGNORED_SUFFIXES)
    )


@dataclass(frozen=True)
class ModelContent:
    """A model's content: ``key`` ("sha256:..." or "hub:<commit>"), None where it cannot be
    known; ``note``: what to tell the user about how it was found."""

    key: str | None
    note: str | None = None


def _hub_said_no(exc: Exception) -> bool:
    """The hub answered, and the repository or revision is not there (or not ours to see)."""
    try:
        from huggingface_hub.errors import (
            GatedRepoError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:
        return False
    return isinstance(exc, (RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError))


def _local_snapshot(repo_id: str, revision: str | None) -> str | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True)).name
    except Exception:  # noqa: BLE001 - not in the local hub cache
        return None


def hub_content(repo_id: str, revision: str | None) -> ModelContent:
    """The commit the revision points to, asked of the hub first: a local snapshot may be
    older than the hub (an upstream push), and transformers loads what the hub has."""
    try:
        from huggingface_hub import HfApi

        sha = HfApi().model_info(repo_id, revision=revision).sha
        return ModelContent(None if sha is None else "hub:" + sha)
    except Exception as exc:  # noqa: BLE001 - offline, or the hub said no
        if _hub_said_no(exc):
            return ModelContent(None)  # the load will fail or differ: unknown content
        reason = f"{type(exc).__name__}: {first_line(exc)}"
    commit = _local_snapshot(repo_id, revision)
    if commit is None:
        return ModelContent(None)
    return ModelContent(
        "hub:" + commit,
        (
            f"pytest-mmlu: hub unreachable ({reason.rstrip(': ')}); evaluations of {repo_id} "
            f"(revision {revision or 'main'}) are identified by the local snapshot {commit[:12]}, "
            f"which may be older than the hub's"
        ),
    )


def model_content(model: str, revision: str | None, hashes: ContentHashes) -> ModelContent:
    """A local folder by the content of its files; a hub id by its commit; a local path that
    is no folder by nothing (it cannot load either)."""
    if looks_like_path(model):
        path = Path(model)
        return ModelContent(hashes.folder(path) if path.is_dir() else None)
    return hub_content(model, revision)
