"""Result cache: an evaluation re-run with nothing changed is read back, not recomputed.

The key hashes the model's content (its weight, config and tokenizer files, or
the hub commit), the data's content (the questions' fingerprint), every setting
that can change a result or a peak (subjects, shots, limit, dtype, device,
batch size, budget) and the scoring version.  Entries are JSON files named by
the key; an entry that does not parse or whose stored key differs is ignored
and overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from . import SCORING_VERSION, __version__
from .reports import write_json_atomic
from .results import EvaluationResult

MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".json", ".model", ".txt", ".tiktoken", ".jinja")


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


def local_model_key(folder: Path, memo: dict[str, Any]) -> str:
    """sha256 over the names and contents of the folder's model, config and tokenizer files."""
    h = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name.endswith(MODEL_FILE_SUFFIXES):
            h.update(f"{path.name}:{_file_sha256(path, memo)}\n".encode())
    return h.hexdigest()


def hub_model_key(repo_id: str, revision: str | None) -> str | None:
    """The hub commit the revision points to: from the local hub cache, else the hub; None if neither."""
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(repo_id, revision=revision, local_files_only=True)
        return "hub:" + Path(folder).name
    except Exception:  # noqa: BLE001 - not cached locally
        pass
    try:
        from huggingface_hub import HfApi

        return "hub:" + HfApi().model_info(repo_id, revision=revision).sha
    except Exception:  # noqa: BLE001 - offline: no key, no caching
        return None


class ResultCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._memo_path = root / "file-hashes.json"
        try:
            self._memo = json.loads(self._memo_path.read_text())
        except (OSError, ValueError):
            self._memo = {}

    def model_key(self, model: str, revision: str | None) -> str | None:
        path = Path(model)
        if path.is_dir():
            key = local_model_key(path, self._memo)
            write_json_atomic(self._memo_path, self._memo)
            return key
        return hub_model_key(model, revision)

    @staticmethod
    def key(**parts: Any) -> str:
        parts.update(scoring_version=SCORING_VERSION, pytest_mmlu=__version__)
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=list).encode()).hexdigest()

    def get(self, key: str) -> EvaluationResult | None:
        path = self.root / f"{key}.json"
        try:
            entry = json.loads(path.read_text())
            if entry.get("key") != key:
                return None
            result = EvaluationResult.from_dict(entry["result"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # missing, corrupt or foreign: recompute and overwrite
        result.from_cache = True
        return result

    def put(self, key: str, result: EvaluationResult) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.root / f"{key}.json", {"key": key, "result": result.to_dict()})

    def clear(self) -> None:
        for path in self.root.glob("*.json"):
            os.unlink(path)
