"""The result cache through whole pytest runs."""

from __future__ import annotations

import json

SUITE = """
import pytest

@pytest.mark.mmlu(subjects=["anatomy"], shots=1, limit=3)
def test_gate(mmlu_result):
    pass
"""


def test_a_new_torch_misses_end_to_end(pytester, tiny_model_dir, mmlu_csv_dir, tmp_path, monkeypatch):
    import torch

    pytester.makepyfile(test_gate=SUITE)
    report = pytester.path / "r.json"

    def from_cache() -> bool:
        pytester.runpytest_inprocess(
            "--mmlu-model",
            str(tiny_model_dir),
            "--mmlu-data",
            str(mmlu_csv_dir),
            "--mmlu-device",
            "cpu",
            "--mmlu-cache-dir",
            str(tmp_path / "c"),
            "--mmlu-report",
            str(report),
            "-p",
            "no:cacheprovider",
        ).assert_outcomes(passed=1)
        return json.loads(report.read_text())["tests"][0]["evaluations"][0]["from_cache"]

    assert not from_cache()
    assert from_cache()
    monkeypatch.setattr(torch, "__version__", torch.__version__ + ".post1")
    assert not from_cache()
