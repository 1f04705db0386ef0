from __future__ import annotations

import pytest
from factories import save_model_folder, write_mmlu_csvs


@pytest.fixture(scope="session")
def mmlu_csv_dir(tmp_path_factory):
    """Synthetic MMLU in the original layout for all 57 subjects (6 test, 5 dev questions each)."""
    return write_mmlu_csvs(tmp_path_factory.mktemp("mmlu") / "data")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random llama with a BOS-adding BPE tokenizer, saved as safetensors."""
    return save_model_folder(tmp_path_factory.mktemp("models") / "tiny-llama", "llama", add_bos=True)
