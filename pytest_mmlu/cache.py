"""Result cache: an evaluation re-run with nothing changed is read back, not recomputed.

The key hashes everything that can change a result or a peak:
- the model: the content of every file in its folder that may be loaded (weights,
  config, tokenizer, remote-code ``*.py``), or the hub commit as the hub reports it
  (the local hub cache only when the hub cannot be reached, and then a note says so);
- the software: torch (with its CUDA build), transformers, lm-eval, pytest-mmlu's
  version and its own source, the scoring version;
- the hardware: device kind and GPU model;
- the data's content (the questions' fingerprint) and every evaluation setting
  (subjects, shots, limit, dtype, batch size, budget, remote code, pickle).
Entries are JSON files named by the key; an entry that does not parse or whose
stored key differs is ignored and overwritten. Results with NaN or inf scores are
never stored nor served.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import SCORING_VERSION
from .reports import write_json_atomic
from .results import EvaluationResult

# Files in a model folder that are never loaded; anything else counts as model content.
IGNORED_SUFFIXES = (".md", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".pdf", ".lock", ".tmp")
IGNORED_NAMES = ("LICENSE", "LICENSE.txt", "NOTICE", "USE_POLICY")
MEMO_NAME = "file-hashes.json"


def _file_sha256(path: Path, memo: dict[str, Any]) -> str:
    st = path.stat()
    tag = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    if tag not in memo:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        memo[tag] = h.hexdigest()
    return memo[tag]


def _may_be_loaded(path: Path) -> bool:
    """Every regular file but documentation and hidden files: a file type we do not know
    (a new tokenizer format, remote code) must change the key, never be overlooked."""
    name = path.name
    return (path.is_file() and not name.startswith(".") and name not in IGNORED_NAMES
            and not name.lower().endswith(IGNORED_SUFFIXES))


def local_model_key(folder: Path, memo: dict[str, Any]) -> str:
    """sha256 over the names and contents of every file of the folder, subfolders included
    (remote code in packages, sharded or adapter weights), that may be loaded."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if _may_be_loaded(path) and not any(part.startswith(".") for part in relative.parts):
            h.update(f"{relative.as_posix()}:{_file_sha256(path, memo)}\n".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class ModelKey:
    """The model's part of the key; ``key`` None: not cacheable.  ``note``: to tell the user."""

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


def hub_model_key(repo_id: str, revision: str | None) -> ModelKey:
    """The commit the revision points to, asked of the hub first: a local snapshot may be
    older than the hub (an upstream push), and transformers loads what the hub has."""
    try:
        from huggingface_hub import HfApi

        return ModelKey("hub:" + HfApi().model_info(repo_id, revision=revision).sha)
    except Exception as exc:  # noqa: BLE001 - offline, or the hub said no
        if _hub_said_no(exc):
            return ModelKey(None)  # the load will fail or differ: never serve a result
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    commit = _local_snapshot(repo_id, revision)
    if commit is None:
        return ModelKey(None)
    return ModelKey("hub:" + commit, (
        f"pytest-mmlu: hub unreachable ({reason.rstrip(': ')}); cached results of {repo_id} "
        f"(revision {revision or 'main'}) are keyed by the local snapshot {commit[:12]}, "
        f"which may be older than the hub's"))


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def _source_digest(root: Path = Path(__file__).parent) -> str:
    """sha256 of pytest-mmlu's own modules, subpackages (the engine) included: an edit
    between releases changes scores too."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def software_versions() -> dict[str, Any]:
    """Versions read at call time (not import time), so that what runs is what is keyed."""
    import torch
    import transformers

    import pytest_mmlu

    return {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "transformers": transformers.__version__, "lm_eval": _package_version("lm_eval"),
            "pytest_mmlu": pytest_mmlu.__version__, "pytest_mmlu_source": _source_digest(),
            "scoring_version": SCORING_VERSION}


def hardware(device: str) -> dict[str, Any]:
    """Device kind and GPU model.  Not the GPU index: xdist workers spread over GPUs, and
    the same model of GPU gives the same result on any index."""
    if not device.startswith("cuda"):
        return {"device": device, "gpu": "cpu"}
    import torch

    index = int(device.split(":")[1]) if ":" in device else 0
    return {"device": "cuda", "gpu": torch.cuda.get_device_name(index)}


class ResultCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._memo_path = root / MEMO_NAME
        self._memo = self._read_memo()

    def _read_memo(self) -> dict[str, Any]:
        try:
            memo = json.loads(self._memo_path.read_text())
        except (OSError, ValueError):
            return {}
        return memo if isinstance(memo, dict) else {}

    def _save_memo(self) -> None:
        """Read, merge, write under a file lock: xdist workers and parallel jobs share the
        memo, and a plain write would drop the hashes another one added meanwhile."""
        from filelock import FileLock

        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self._memo_path) + ".lock"):
            merged = {**self._read_memo(), **self._memo}
            write_json_atomic(self._memo_path, merged)
        self._memo = merged

    def model_key(self, model: str, revision: str | None) -> ModelKey:
        path = Path(model)
        if path.is_dir():
            known = len(self._memo)
            key = local_model_key(path, self._memo)
            if len(self._memo) != known:  # nothing new hashed: nothing to write
                self._save_memo()
            return ModelKey(key)
        return hub_model_key(model, revision)

    @staticmethod
    def key(**parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=list).encode()).hexdigest()

    def evaluation_key(self, model_key: str, device: str, **settings: Any) -> str:
        """The key of one evaluation: model, software, hardware, and its settings and data."""
        return self.key(model=model_key, software=software_versions(), hardware=hardware(device),
                        settings=settings)

    def get(self, key: str) -> EvaluationResult | None:
        path = self.root / f"{key}.json"
        try:
            entry = json.loads(path.read_text())
            if entry.get("key") != key:
                return None
            result = EvaluationResult.from_dict(entry["result"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # missing, corrupt or foreign: recompute and overwrite
        if result.non_finite_questions:
            return None  # never serve NaN/inf scores: a fixed engine must get to run again
        result.from_cache = True
        return result

    def put(self, key: str, result: EvaluationResult) -> None:
        if result.non_finite_questions:
            return  # an error, not a result: not kept
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.root / f"{key}.json", {"key": key, "result": result.to_dict()})

    def clear(self) -> None:
        for path in self.root.glob("*.json"):
            os.unlink(path)
