from __future__ import annotations

import importlib.util

import pytest
from factories import ROOT, save_model_folder, write_mmlu_csvs


@pytest.fixture(autouse=True)
def _not_in_ci(monkeypatch):
    """pytester runs inherit the environment: CI=true (as our CI sets it) would turn every
    expected skip into a usage error. Tests of that behaviour set CI themselves."""
    for name in ("CI", "PYTEST_MMLU_REQUIRE_MODEL", "PYTEST_MMLU_ALLOW_SKIP"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def mmlu_csv_dir(tmp_path_factory):
    """Synthetic MMLU in the original layout for all 57 subjects (6 test, 5 dev questions each)."""
    return write_mmlu_csvs(tmp_path_factory.mktemp("mmlu") / "data")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random llama with a BOS-adding BPE tokenizer, saved as safetensors."""
    return save_model_folder(tmp_path_factory.mktemp("models") / "tiny-llama", "llama", add_bos=True)


@pytest.fixture(scope="session", autouse=True)
def _modeling_modules_stay_imported():
    """pytester's in-process runs take out of ``sys.modules`` what they imported; the tiny models'
    modeling modules imported first here stay (transformers 5.2 looks a model class's module up
    by name while building it: see ``factories.with_its_module``)."""
    import importlib

    for module in ("transformers.models.llama.modeling_llama", "transformers.models.phi.modeling_phi"):
        importlib.import_module(module)


@pytest.fixture(scope="session")
def smollm2_dir():
    spec = importlib.util.spec_from_file_location("build_smollm2", ROOT / "scripts" / "build_smollm2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build()


@pytest.fixture
def gpus(monkeypatch):
    """A machine with ``n`` visible GPUs (default 2), outside xdist unless a test says so."""
    import torch

    def install(n: int = 2) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    install()
    return install
