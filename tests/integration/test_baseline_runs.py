"""Baselines through whole pytest runs: written, kept, never a regression recorded."""

from __future__ import annotations

import json

from factories import save_answer_a_model, write_mmlu_csvs


def test_updating_the_baseline_never_records_a_regression(pytester, tmp_path):
    root = tmp_path / "w"
    data = write_mmlu_csvs(root / "data", ["anatomy", "virology"], n_test=10, n_dev=2, seed=3, a_share=0.8)
    good = save_answer_a_model(root / "good", boost=8.0)
    degraded = save_answer_a_model(root / "degraded", boost=0.0, noise=0.05)
    pytester.makepyfile(
        test_gate="""
import pytest

@pytest.mark.mmlu(subjects=["anatomy", "virology"], shots=1, limit=10)
@pytest.mark.mmlu_no_regression()
def test_gate(mmlu_result):
    pass
"""
    )
    baseline = pytester.path / "baseline.json"

    def run(model):
        return pytester.runpytest_inprocess(
            f"--mmlu-model={model}",
            f"--mmlu-data={data}",
            "-p",
            "no:cacheprovider",
            "--mmlu-no-cache",
            f"--mmlu-baseline={baseline}",
            "--mmlu-update-baseline",
        )

    run(good).assert_outcomes(passed=1)
    written = baseline.read_text()
    result = run(degraded)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*MMLU regression vs baseline: 0.8* -> 0.1*", "*baseline NOT written to*"])
    assert baseline.read_text() == written  # the last release's answers are kept


def test_the_report_is_written_even_with_nothing_in_it(pytester):
    """A report left in place from an earlier run would be read as this run's verdict."""
    report = pytester.path / "r.json"
    report.write_text('{"schema": 1, "tests": [{"nodeid": "old", "evaluations": []}]}')
    pytester.makepyfile("def test_x():\n    pass\n")
    pytester.runpytest_inprocess("-p", "no:cacheprovider", f"--mmlu-report={report}").assert_outcomes(passed=1)
    assert json.loads(report.read_text())["tests"] == []
