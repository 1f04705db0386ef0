"""The result cache is exact: every input that can change a result is in the key.

Keys are computed through ``MmluSession._cache_key`` (what an evaluation uses), with
versions, the GPU and the hub faked at their boundary.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from factories import write_mmlu_csvs

from pytest_mmlu.markers import EvalSpec
from pytest_mmlu.session import MmluSession
from pytest_mmlu.settings import Settings

SPEC = EvalSpec(subjects=("anatomy", "virology"), shots=2, limit=3)
CONFIG = SimpleNamespace(cache=None, getoption=lambda *a, **k: False)


@pytest.fixture
def model_dir(tiny_model_dir, tmp_path):
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def session(tmp_path: Path, model: str | Path, data: Path, **settings) -> MmluSession:
    return MmluSession(CONFIG, Settings(model=str(model), data=str(data),
                                        cache_dir=str(tmp_path / "cache"), **settings))


def key(tmp_path, model, data, spec=SPEC, budget=None, **settings) -> str | None:
    return session(tmp_path, model, data, **settings)._cache_key(spec, budget)


def test_remote_code_files_are_part_of_the_model_content(tmp_path, model_dir, mmlu_csv_dir):
    before = key(tmp_path, model_dir, mmlu_csv_dir)
    (model_dir / "modeling_custom.py").write_text("SCALE = 1.0\n")
    added = key(tmp_path, model_dir, mmlu_csv_dir)
    (model_dir / "modeling_custom.py").write_text("SCALE = 2.0\n")
    edited = key(tmp_path, model_dir, mmlu_csv_dir)
    assert len({before, added, edited}) == 3


@pytest.mark.parametrize("package", ["torch", "transformers", "lm_eval", "pytest_mmlu"])
def test_each_library_version_is_part_of_the_key(tmp_path, model_dir, mmlu_csv_dir, monkeypatch, package):
    import torch
    import transformers

    import pytest_mmlu

    before = key(tmp_path, model_dir, mmlu_csv_dir)
    if package == "lm_eval":
        real = importlib.metadata.version
        monkeypatch.setattr(importlib.metadata, "version",
                            lambda name: "9.9.9" if name.replace("-", "_") == "lm_eval" else real(name))
    else:
        module = {"torch": torch, "transformers": transformers, "pytest_mmlu": pytest_mmlu}[package]
        monkeypatch.setattr(module, "__version__", "9.9.9")
    assert key(tmp_path, model_dir, mmlu_csv_dir) != before


def fake_gpu(monkeypatch, name: str) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)


def test_the_gpu_model_is_part_of_the_key(tmp_path, model_dir, mmlu_csv_dir, monkeypatch):
    cpu = key(tmp_path, model_dir, mmlu_csv_dir, device="cpu", dtype="bfloat16")
    fake_gpu(monkeypatch, "NVIDIA H100 80GB HBM3")
    h100 = key(tmp_path, model_dir, mmlu_csv_dir, device="cuda", dtype="bfloat16")
    fake_gpu(monkeypatch, "NVIDIA A100-SXM4-40GB")
    a100 = key(tmp_path, model_dir, mmlu_csv_dir, device="cuda", dtype="bfloat16")
    assert len({cpu, h100, a100}) == 3


def test_every_setting_and_the_data_are_part_of_the_key(tmp_path, model_dir, mmlu_csv_dir):
    other_data = write_mmlu_csvs(tmp_path / "other" / "data", ["anatomy", "virology"], seed=7)
    base = dict(model=model_dir, data=mmlu_csv_dir)
    variants = {
        "base": {},
        "data": dict(data=other_data),
        "dtype": dict(dtype="bfloat16"),
        "subjects": dict(spec=EvalSpec(subjects=("anatomy",), shots=2, limit=3)),
        "shots": dict(spec=EvalSpec(subjects=SPEC.subjects, shots=1, limit=3)),
        "limit": dict(spec=EvalSpec(subjects=SPEC.subjects, shots=2, limit=4)),
        "batch": dict(batch_size=4),
        "budget": dict(budget=2**30),
        "remote code": dict(trust_remote_code=True),
        "pickle": dict(allow_pickle=True),
    }
    keys = {name: key(tmp_path, **{**base, **change}) for name, change in variants.items()}
    assert None not in keys.values()
    assert len(set(keys.values())) == len(keys), keys
    assert key(tmp_path, **base) == keys["base"]  # and nothing else moves it


class FakeHub:
    """huggingface_hub's surface as the cache uses it: the hub's answer and the local snapshot."""

    def __init__(self, hub_commit: str | None, local_commit: str | None) -> None:
        self.hub_commit, self.local_commit = hub_commit, local_commit

    def install(self, monkeypatch) -> None:
        import huggingface_hub

        hub = self

        class HfApi:
            def model_info(self, repo_id, revision=None, **kwargs):
                if hub.hub_commit is None:
                    raise ConnectionError("Failed to resolve 'huggingface.co'")
                return SimpleNamespace(sha=hub.hub_commit)

        def snapshot_download(repo_id, revision=None, local_files_only=False, **kwargs):
            if not local_files_only:
                raise AssertionError("the cache key never downloads")
            if hub.local_commit is None:
                raise FileNotFoundError("not in the local hub cache")
            return f"/hf/models--org--model/snapshots/{hub.local_commit}"

        monkeypatch.setattr(huggingface_hub, "HfApi", HfApi)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)


def hub_key(tmp_path, data, monkeypatch, hub_commit, local_commit):
    FakeHub(hub_commit, local_commit).install(monkeypatch)
    sess = session(tmp_path, "org/model", data)
    return sess._cache_key(SPEC, None), sess


def test_hub_commit_comes_from_the_hub_not_a_stale_local_snapshot(tmp_path, mmlu_csv_dir, monkeypatch):
    old, new = "a" * 40, "b" * 40
    before_push, _ = hub_key(tmp_path, mmlu_csv_dir, monkeypatch, hub_commit=old, local_commit=old)
    after_push, sess = hub_key(tmp_path, mmlu_csv_dir, monkeypatch, hub_commit=new, local_commit=old)
    assert before_push and after_push and after_push != before_push
    assert sess.notes == []


def test_offline_the_local_snapshot_keys_and_the_session_says_so(tmp_path, mmlu_csv_dir, monkeypatch):
    local = "c" * 40
    online, _ = hub_key(tmp_path, mmlu_csv_dir, monkeypatch, hub_commit=local, local_commit=local)
    offline, sess = hub_key(tmp_path, mmlu_csv_dir, monkeypatch, hub_commit=None, local_commit=local)
    assert offline == online
    assert len(sess.notes) == 1
    assert "hub unreachable" in sess.notes[0] and local[:12] in sess.notes[0] and "org/model" in sess.notes[0]
    sess._cache_key(SPEC, None)
    assert len(sess.notes) == 1  # said once per run


def test_offline_and_not_cached_locally_is_not_cached(tmp_path, mmlu_csv_dir, monkeypatch):
    assert hub_key(tmp_path, mmlu_csv_dir, monkeypatch, hub_commit=None, local_commit=None)[0] is None


def test_file_hash_memo_merges_updates_from_other_workers(tmp_path, tiny_model_dir):
    from pytest_mmlu.cache import ResultCache

    first = Path(shutil.copytree(tiny_model_dir, tmp_path / "first"))
    second = Path(shutil.copytree(tiny_model_dir, tmp_path / "second"))
    (second / "extra.py").write_text("X = 1\n")
    root = tmp_path / "cache"
    worker_a, worker_b = ResultCache(root), ResultCache(root)  # both read the memo before either writes
    worker_a.model_key(str(first), None)
    worker_b.model_key(str(second), None)
    memo = json.loads((root / "file-hashes.json").read_text())
    assert any(str(first.resolve()) in tag for tag in memo)
    assert any(str(second.resolve()) in tag for tag in memo)


def test_file_hash_memo_is_written_under_a_file_lock(tmp_path, tiny_model_dir, monkeypatch):
    import filelock

    from pytest_mmlu import cache

    root = tmp_path / "cache"
    held = []
    real_write = cache.write_json_atomic

    def write(path, data):
        try:
            filelock.FileLock(str(root / "file-hashes.json.lock")).acquire(timeout=0)
            held.append(False)
        except filelock.Timeout:
            held.append(True)
        real_write(path, data)

    monkeypatch.setattr(cache, "write_json_atomic", write)
    cache.ResultCache(root).model_key(str(tiny_model_dir), None)
    assert held == [True]


SUITE = '''
import pytest

@pytest.mark.mmlu(subjects=["anatomy"], shots=1, limit=3)
def test_gate(mmlu_result):
    pass
'''


def test_a_new_torch_misses_end_to_end(pytester, tiny_model_dir, mmlu_csv_dir, tmp_path, monkeypatch):
    import torch

    pytester.makepyfile(test_gate=SUITE)
    report = pytester.path / "r.json"

    def from_cache() -> bool:
        pytester.runpytest_inprocess("--mmlu-model", str(tiny_model_dir), "--mmlu-data", str(mmlu_csv_dir),
                                     "--mmlu-device", "cpu", "--mmlu-cache-dir", str(tmp_path / "c"),
                                     "--mmlu-report", str(report), "-p", "no:cacheprovider",
                                     ).assert_outcomes(passed=1)
        return json.loads(report.read_text())["tests"][0]["evaluations"][0]["from_cache"]

    assert not from_cache()
    assert from_cache()
    monkeypatch.setattr(torch, "__version__", torch.__version__ + ".post1")
    assert not from_cache()


def test_results_with_non_finite_scores_are_never_stored_nor_served(tmp_path):
    import dataclasses
    import math

    from pytest_mmlu.cache import ResultCache
    from pytest_mmlu.results import EvaluationResult, QuestionResult

    finite = EvaluationResult(("anatomy",), 0, 2, "anatomy", [QuestionResult("anatomy", 0, 0, 0, (0.0, -1.0, -2.0, -3.0))],
                              1, None, 1, [1], 0.1, 10, "cpu", "float32")
    nan = dataclasses.replace(finite, questions=[QuestionResult("anatomy", 0, 0, 0, (math.nan, -1.0, -2.0, -3.0))])
    cache = ResultCache(tmp_path)
    cache.put("k", nan)
    assert cache.get("k") is None and not (tmp_path / "k.json").exists()
    cache.put("k", finite)
    assert cache.get("k").from_cache
    # An entry written before this rule (or by hand) is not served either.
    entry = json.loads((tmp_path / "k.json").read_text())
    entry["result"]["questions"][0]["loglikelihoods"][0] = math.nan
    (tmp_path / "k.json").write_text(json.dumps(entry))
    assert cache.get("k") is None


def test_a_file_in_a_subfolder_changes_the_key(tmp_path):
    """Remote code in a package folder, sharded or adapter weights under a subfolder."""
    from pytest_mmlu.cache import local_model_key

    folder = tmp_path / "model"
    (folder / "pkg").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "pkg" / "attention.py").write_text("SCALE = 1.0\n")
    before = local_model_key(folder, {})
    (folder / "pkg" / "attention.py").write_text("SCALE = 2.0\n")
    assert local_model_key(folder, {}) != before
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref")  # hidden folders are not the model
    assert local_model_key(folder, {}) == local_model_key(folder, {})


def test_an_edit_in_a_subpackage_of_pytest_mmlu_changes_the_source_digest(tmp_path):
    """The engine is a package (pytest_mmlu/engine/): its modules are part of the key too."""
    import pytest_mmlu
    from pytest_mmlu.cache import _source_digest

    digest = _source_digest.__wrapped__  # not memoized: the same folder is read twice
    copy = tmp_path / "pytest_mmlu"
    shutil.copytree(Path(pytest_mmlu.__file__).parent, copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    before = digest(copy)
    forward = copy / "engine" / "forward.py"
    forward.write_text(forward.read_text() + "\n# an edit\n")
    assert digest(copy) != before
