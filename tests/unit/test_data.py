from __future__ import annotations

import re
import shutil
import tarfile
import zipfile

import pytest

from pytest_mmlu.mmlu.data import DataError, MmluData


def test_folder_parent_zip_and_tar_give_the_same_questions(mmlu_csv_dir, tmp_path):
    zpath = tmp_path / "mmlu.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in mmlu_csv_dir.rglob("*.csv"):
            zf.write(f, "data/" + str(f.relative_to(mmlu_csv_dir)))
    tpath = tmp_path / "mmlu.tar"
    with tarfile.open(tpath, "w") as tf:
        tf.add(mmlu_csv_dir, arcname="data")
    sources = [MmluData(str(p)) for p in (mmlu_csv_dir, mmlu_csv_dir.parent, zpath, tpath)]
    first = sources[0].test_questions("anatomy", None)
    assert len(first) == 6 and first[0].index == 0 and first[0].answer in range(4)
    for src in sources[1:]:
        assert src.test_questions("anatomy", None) == first
        assert src.fingerprint(["anatomy"]) == sources[0].fingerprint(["anatomy"])
    assert sources[0].test_questions("anatomy", 2) == first[:2]
    assert len(sources[0].shots("anatomy", 5)) == 5


def test_parquet_copy_of_the_hub_dataset(mmlu_csv_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_src = MmluData(str(mmlu_csv_dir))
    for split in ("dev", "test"):
        rows = csv_src.split("virology", split)
        (tmp_path / "virology").mkdir(exist_ok=True)
        table = pa.table(
            {
                "question": [q.question for q in rows],
                "subject": ["virology"] * len(rows),
                "choices": [list(q.choices) for q in rows],
                "answer": [q.answer for q in rows],
            }
        )
        pq.write_table(table, tmp_path / "virology" / f"{split}-00000-of-00001.parquet")
    pq_src = MmluData(str(tmp_path))
    assert pq_src.test_questions("virology", None) == csv_src.test_questions("virology", None)
    assert pq_src.fingerprint(["virology"]) == csv_src.fingerprint(["virology"])


def _copy(src, tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(src, dst)
    return dst


def test_wrong_column_count_names_file_and_line(mmlu_csv_dir, tmp_path):
    root = _copy(mmlu_csv_dir, tmp_path)
    path = root / "test" / "anatomy_test.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = '"only","three","columns"\n'
    path.write_text("".join(lines))
    with pytest.raises(DataError, match=r"anatomy_test.csv:3: expected 6 columns .* found 3"):
        MmluData(str(root)).test_questions("anatomy", None)


def test_answer_outside_a_to_d(mmlu_csv_dir, tmp_path):
    root = _copy(mmlu_csv_dir, tmp_path)
    path = root / "dev" / "anatomy_dev.csv"
    path.write_text('"q","a","b","c","d","E"\n')
    with pytest.raises(DataError, match=r"anatomy_dev.csv:1: answer must be one of A, B, C, D, found 'E'"):
        MmluData(str(root)).shots("anatomy", 1)


def test_missing_subject_file_and_not_a_dataset(mmlu_csv_dir, tmp_path):
    root = _copy(mmlu_csv_dir, tmp_path)
    (root / "test" / "virology_test.csv").unlink()
    with pytest.raises(DataError, match=r"no test file for subject 'virology'"):
        MmluData(str(root)).test_questions("virology", None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not an MMLU folder"):
        MmluData(str(tmp_path / "empty"))


def test_hub_without_network_says_what_to_do(monkeypatch):
    # huggingface_hub reads HF_HUB_OFFLINE once, at import: set its constant too.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    data = MmluData("cais/mmlu")
    with pytest.raises(DataError, match=r"cannot download MMLU subject 'anatomy' .* --mmlu-data=PATH"):
        data.test_questions("anatomy", 3)


@pytest.mark.parametrize("spec", ["/no/such/mmlu.zip", "./mmlu", "data/mmlu/extra", "mmlu.tar"])
def test_missing_local_path_is_named_not_fetched(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=rf"^{re.escape(spec)}: no such file or folder$"):
        MmluData(spec)
