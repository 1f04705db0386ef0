"""The result cache is exact: it serves an entry only where the evaluation's identity is the
same for every field (``identity.CACHE``) and the measurement conditions are equal.

Identities are made by ``MmluSession.identity`` (what an evaluation uses), with versions, the
GPU and the hub faked at their boundary. The end-to-end confusion matrix is in
``test_one_verdict.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from factories import made_up_identity, make_result, write_mmlu_csvs

from pytest_mmlu import software
from pytest_mmlu.markers import EvalSpec
from pytest_mmlu.models import content
from pytest_mmlu.models.variants import Variant
from pytest_mmlu.reports.cache import ResultCache, entry_name, measured_under
from pytest_mmlu.session import MmluSession
from pytest_mmlu.settings import Settings

SPEC = EvalSpec(subjects=("anatomy", "virology"), shots=2, limit=3)
CONFIG = SimpleNamespace(cache=None, getoption=lambda *a, **k: False)


@pytest.fixture
def model_dir(tiny_model_dir, tmp_path):
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def session(tmp_path: Path, model: str | Path, data: Path, **settings) -> MmluSession:
    return MmluSession(
        CONFIG, Settings(model=str(model), data=str(data), cache_dir=str(tmp_path / "cache"), **settings)
    )


def key(tmp_path, model, data, spec=SPEC, budget=None, variant=None, **settings) -> str:
    sess = session(tmp_path, model, data, **settings)
    return entry_name(sess.identity(spec, variant), measured_under(sess.settings, budget))


def test_remote_code_files_are_part_of_the_model_content(tmp_path, model_dir, mmlu_csv_dir):
    before = key(tmp_path, model_dir, mmlu_csv_dir)
    (model_dir / "modeling_custom.py").write_text("SCALE = 1.0\n")
    added = key(tmp_path, model_dir, mmlu_csv_dir)
    (model_dir / "modeling_custom.py").write_text("SCALE = 2.0\n")
    edited = key(tmp_path, model_dir, mmlu_csv_dir)
    assert len({before, added, edited}) == 3


@pytest.mark.parametrize(
    "package",
    [
        "torch",
        "transformers",
        "tokenizers",
        "accelerate",
        "torchao",
        "bitsandbytes",
        "peft",
        "jinja2",
        "lm_eval",
        "pytest_mmlu",
    ],
)
def test_each_library_that_can_change_a_score_is_part_of_the_key(
    tmp_path, model_dir, mmlu_csv_dir, monkeypatch, package
):
    import torch

    import pytest_mmlu

    before = key(tmp_path, model_dir, mmlu_csv_dir)
    if package == "torch":
        monkeypatch.setattr(torch, "__version__", "9.9.9")
    elif package == "pytest_mmlu":
        monkeypatch.setattr(pytest_mmlu, "__version__", "9.9.9")
    else:  # installed or not: another version, or a first install, changes the key
        real = software._package_version
        monkeypatch.setattr(software, "_package_version", lambda name: "9.9.9" if name == package else real(name))
    assert key(tmp_path, model_dir, mmlu_csv_dir) != before


def fake_gpu(monkeypatch, name: str) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)


def test_the_gpu_model_is_part_of_the_key(tmp_path, model_dir, mmlu_csv_dir, monkeypatch):
    cpu = key(tmp_path, model_dir, mmlu_csv_dir, device="cpu", dtype="bfloat16")
    fake_gpu(monkeypatch, "NVIDIA H100 80GB HBM3")
    h100 = key(tmp_path, model_dir, mmlu_csv_dir, device="cuda", dtype="bfloat16")
    fake_gpu(monkeypatch, "NVIDIA A100-SXM4-40GB")
    a100 = key(tmp_path, model_dir, mmlu_csv_dir, device="cuda", dtype="bfloat16")
    assert len({cpu, h100, a100}) == 3


def test_the_dtype_in_the_key_is_the_one_the_model_loads_in(tmp_path, model_dir, mmlu_csv_dir, monkeypatch):
    """int4 on CUDA computes in bfloat16 whatever dtype auto would pick for the checkpoint
    (float32 here): the identity, and so the key, says what is loaded, from the load plan
    the loader follows."""
    from pytest_mmlu.models.plan import plan_load

    fake_gpu(monkeypatch, "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object())  # torchao "installed"
    sess = session(tmp_path, model_dir, mmlu_csv_dir, device="cuda")
    assert sess.identity(SPEC, Variant("none"))["dtype"] == "float32"
    int4 = sess.identity(SPEC, Variant("int4"))
    assert int4["dtype"] == "bfloat16" == plan_load(sess.settings, Variant("int4")).dtype
    assert int4["device"] == "cuda:NVIDIA H100 80GB HBM3"


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
        "quantization": dict(variant=Variant("int8")),
        "system instruction": dict(system_instruction="Be brief."),
        "device map": dict(device_map="single"),
    }
    keys = {name: key(tmp_path, **{**base, **change}) for name, change in variants.items()}
    assert len(set(keys.values())) == len(keys), keys
    assert key(tmp_path, **base) == keys["base"]  # and nothing else moves it


# -- the cache decides by identity, not by the file's name ---------------------------------------
def cached_result():
    from pytest_mmlu.mmlu.results import QuestionResult

    return make_result([QuestionResult("anatomy", 0, 0, 0, (0.0, -1.0, -2.0, -3.0))], limit=2, peak_memory_bytes=1)


IDENTITY = made_up_identity([("anatomy", 0)], 0)
CONDITIONS = {"budget": None, "batch_size": "auto"}


def test_an_entry_is_served_only_for_the_same_identity_and_conditions(tmp_path):
    cache = ResultCache(tmp_path)
    cache.put(IDENTITY, CONDITIONS, cached_result())
    assert cache.get(IDENTITY, CONDITIONS).from_cache
    assert cache.get({**IDENTITY, "dtype": "bfloat16"}, CONDITIONS) is None
    assert cache.get(IDENTITY, {**CONDITIONS, "budget": 1}) is None
    # An entry whose stored identity is not the one asked for (a collision, a copied file) is
    # not served, whatever its name says.
    (path,) = tmp_path.glob("*.json")
    entry = json.loads(path.read_text())
    entry["identity"]["software"] = {"torch": "3"}
    path.write_text(json.dumps(entry))
    assert cache.get(IDENTITY, CONDITIONS) is None


def test_an_identity_with_an_unknown_part_is_neither_stored_nor_served(tmp_path):
    cache = ResultCache(tmp_path)
    unknown = {k: v for k, v in IDENTITY.items() if k != "model"}  # a hub commit that cannot be resolved
    cache.put(unknown, CONDITIONS, cached_result())
    assert not list(tmp_path.glob("*.json")) and cache.get(unknown, CONDITIONS) is None


def test_results_with_non_finite_scores_are_never_stored_nor_served(tmp_path):
    import dataclasses
    import math

    from pytest_mmlu.mmlu.results import QuestionResult

    finite = cached_result()
    nan = dataclasses.replace(finite, questions=[QuestionResult("anatomy", 0, 0, 0, (math.nan, -1.0, -2.0, -3.0))])
    cache = ResultCache(tmp_path)
    cache.put(IDENTITY, CONDITIONS, nan)
    assert cache.get(IDENTITY, CONDITIONS) is None and not list(tmp_path.glob("*.json"))
    cache.put(IDENTITY, CONDITIONS, finite)
    assert cache.get(IDENTITY, CONDITIONS).from_cache
    # An entry written before this rule (or by hand) is not served either.
    (path,) = tmp_path.glob("*.json")
    entry = json.loads(path.read_text())
    entry["result"]["questions"][0]["loglikelihoods"][0] = math.nan
    path.write_text(json.dumps(entry))
    assert cache.get(IDENTITY, CONDITIONS) is None


# -- hub models: the commit as the hub reports it ------------------------------------------------
class FakeHub:
    """huggingface_hub's surface as the content lookup uses it: the hub's answer and the local snapshot."""

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
                raise AssertionError("the content lookup never downloads")
            if hub.local_commit is None:
                raise FileNotFoundError("not in the local hub cache")
            return f"/hf/models--org--model/snapshots/{hub.local_commit}"

        monkeypatch.setattr(huggingface_hub, "HfApi", HfApi)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)


def hub_content(tmp_path, data, monkeypatch, hub_commit, local_commit):
    FakeHub(hub_commit, local_commit).install(monkeypatch)
    sess = session(tmp_path, "org/model", data)
    return sess.model_content(), sess


def test_hub_commit_comes_from_the_hub_not_a_stale_local_snapshot(tmp_path, mmlu_csv_dir, monkeypatch):
    old, new = "a" * 40, "b" * 40
    before_push, _ = hub_content(tmp_path, mmlu_csv_dir, monkeypatch, hub_commit=old, local_commit=old)
    after_push, sess = hub_content(tmp_path, mmlu_csv_dir, monkeypatch, hub_commit=new, local_commit=old)
    assert (before_push, after_push) == (f"hub:{old}", f"hub:{new}")
    assert sess.notes == []


def test_offline_the_local_snapshot_identifies_and_the_session_says_so(tmp_path, mmlu_csv_dir, monkeypatch):
    local = "c" * 40
    online, _ = hub_content(tmp_path, mmlu_csv_dir, monkeypatch, hub_commit=local, local_commit=local)
    offline, sess = hub_content(tmp_path, mmlu_csv_dir, monkeypatch, hub_commit=None, local_commit=local)
    assert offline == online
    assert len(sess.notes) == 1
    assert "hub unreachable" in sess.notes[0] and local[:12] in sess.notes[0] and "org/model" in sess.notes[0]
    sess.model_content()
    assert len(sess.notes) == 1  # said once per run


def test_offline_and_not_cached_locally_is_unknown(tmp_path, mmlu_csv_dir, monkeypatch):
    assert hub_content(tmp_path, mmlu_csv_dir, monkeypatch, hub_commit=None, local_commit=None)[0] is None


def test_a_local_path_that_is_no_folder_is_unknown_never_asked_of_the_hub(tmp_path, mmlu_csv_dir, monkeypatch):
    """The one rule (``sources.looks_like_path``): a path is never looked up as a hub id."""
    FakeHub("a" * 40, "a" * 40).install(monkeypatch)  # a hub that would answer anything
    for model in (str(tmp_path / "gone"), "./models/gone", "weights.tar"):
        assert session(tmp_path, model, mmlu_csv_dir).model_content() is None, model


# -- the memo of file hashes: used only where the file is provably unchanged -------------------
def test_a_file_rewritten_with_the_same_size_and_modification_time_is_hashed_again(tmp_path):
    """Size and mtime prove nothing: a checkpoint rewritten in place with other weights of the
    same size, its mtime set back (a copy with -p, a restore, a careless script), must not be
    served the old hash. The change time, which no program can set back, tells."""
    weights = tmp_path / "model" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"A" * 1000)
    past = time.time() - 3600
    os.utime(weights, (past, past))
    hashes = content.ContentHashes(tmp_path / "memo.json", clock=lambda: time.time() + 3600)
    first = hashes.file(weights)
    hashes.save()
    assert json.loads((tmp_path / "memo.json").read_text())  # remembered
    stat = weights.stat()
    weights.write_bytes(b"B" * 1000)  # same size
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same modification time
    assert weights.stat().st_size == stat.st_size and weights.stat().st_mtime_ns == stat.st_mtime_ns
    later = content.ContentHashes(tmp_path / "memo.json", clock=lambda: time.time() + 7200)
    assert later.file(weights) != first


def test_the_memo_spares_unchanged_files_and_forgets_racy_ones(tmp_path, monkeypatch):
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"x" * 100)
    memo = tmp_path / "memo.json"
    now = content.ContentHashes(memo)  # the file is seconds old: a write in the same tick could hide
    now.file(weights)
    now.save()
    assert not memo.exists() or str(weights.resolve()) not in json.loads(memo.read_text())
    later = content.ContentHashes(memo, clock=lambda: time.time() + 60)
    digest = later.file(weights)
    later.save()
    assert json.loads(memo.read_text())[str(weights.resolve())]["sha256"] == digest
    reads = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: (reads.append(a[0]), real_open(*a, **k))[1])
    assert content.ContentHashes(memo, clock=lambda: time.time() + 60).file(weights) == digest
    assert str(weights) not in map(str, reads)  # served from the memo, not read


def test_file_hash_memo_merges_updates_from_other_workers(tmp_path, tiny_model_dir):
    first = Path(shutil.copytree(tiny_model_dir, tmp_path / "first"))
    second = Path(shutil.copytree(tiny_model_dir, tmp_path / "second"))
    (second / "extra.py").write_text("X = 1\n")
    memo = tmp_path / "cache" / content.MEMO_NAME
    later = lambda: time.time() + 60  # noqa: E731 - the files are old enough to be remembered
    worker_a, worker_b = content.ContentHashes(memo, later), content.ContentHashes(memo, later)
    worker_a.folder(first)  # both read the memo before either writes
    worker_b.folder(second)
    saved = json.loads(memo.read_text())
    assert any(str(first.resolve()) in path for path in saved)
    assert any(str(second.resolve()) in path for path in saved)


def test_file_hash_memo_is_written_under_a_file_lock(tmp_path, tiny_model_dir, monkeypatch):
    import filelock

    memo = tmp_path / "cache" / content.MEMO_NAME
    held = []
    real_write = content.write_json_atomic

    def write(path, data):
        try:
            filelock.FileLock(str(memo) + ".lock").acquire(timeout=0)
            held.append(False)
        except filelock.Timeout:
            held.append(True)
        real_write(path, data)

    monkeypatch.setattr(content, "write_json_atomic", write)
    content.ContentHashes(memo, lambda: time.time() + 60).folder(tiny_model_dir)
    assert held == [True]


def test_a_file_in_a_subfolder_changes_the_content(tmp_path):
    """Remote code in a package folder, sharded or adapter weights under a subfolder."""
    folder = tmp_path / "model"
    (folder / "pkg").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "pkg" / "attention.py").write_text("SCALE = 1.0\n")
    before = content.ContentHashes().folder(folder)
    (folder / "pkg" / "attention.py").write_text("SCALE = 2.0\n")
    assert content.ContentHashes().folder(folder) != before
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref")  # hidden folders are not the model
    assert content.ContentHashes().folder(folder) == content.ContentHashes().folder(folder)


def test_an_edit_in_a_subpackage_of_pytest_mmlu_changes_the_source_digest(tmp_path):
    """The engine is a package (pytest_mmlu/engine/): its modules are part of the identity too."""
    import pytest_mmlu

    copy = tmp_path / "pytest_mmlu"
    shutil.copytree(Path(pytest_mmlu.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = software.source_digest(str(copy))
    forward = copy / "engine" / "forward.py"
    forward.write_text(forward.read_text() + "\n# an edit\n")
    assert software.source_digest(str(copy)) != before
