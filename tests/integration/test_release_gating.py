"""Baselines, the result cache and the reports CI people read, through whole pytest runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from factories import save_answer_a_model, write_mmlu_csvs

SUITE = """
import pytest

@pytest.mark.mmlu(subjects=["anatomy", "virology", "marketing", "nutrition", "sociology", "philosophy"],
                  shots=2, limit=10)
@pytest.mark.mmlu_no_regression(max_drop=0.02, alpha=0.05)
def test_no_regression(mmlu_result):
    pass
"""
SUBJECTS = ["anatomy", "virology", "marketing", "nutrition", "sociology", "philosophy"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("gating")
    return {
        # 80% of answers are A: the "good" model (always A) scores ~0.8, the degraded one ~chance.
        "data": write_mmlu_csvs(root / "data", SUBJECTS, n_test=10, n_dev=5, seed=3, a_share=0.8),
        "other_data": write_mmlu_csvs(root / "other" / "data", SUBJECTS, n_test=10, n_dev=5, seed=4, a_share=0.8),
        "good": save_answer_a_model(root / "good", boost=8.0),
        "degraded": save_answer_a_model(root / "degraded", boost=0.0, noise=0.05),
    }


def run(pytester, world, model="good", data="data", *extra):
    return pytester.runpytest_inprocess(
        "--mmlu-model", str(world[model]), "--mmlu-data", str(world[data]), "-p", "no:cacheprovider", *extra
    )


def test_baseline_gate_end_to_end(pytester, world):
    pytester.makepyfile(test_gate=SUITE)
    baseline = pytester.path / "baseline.json"

    result = run(pytester, world, "good", "data", "--mmlu-baseline", str(baseline))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"MMLU baseline {baseline} does not exist; create or refresh it with --mmlu-baseline PATH --mmlu-update-baseline"
        ]
    )

    result = run(pytester, world, "good", "data", "--mmlu-baseline", str(baseline), "--mmlu-update-baseline")
    result.assert_outcomes(passed=1)
    # The summary wraps at 100 columns: the note may span lines.
    assert f"pytest-mmlu: wrote baseline {baseline}: 1 evaluations from 1 tests" in " ".join(
        result.stdout.str().split()
    )
    stored = json.loads(baseline.read_text())
    assert stored["schema"] == 1 and stored["tests"][0]["evaluations"][0]["accuracy"] > 0.7

    # The same model at other batch sizes never fails against its own baseline.
    for batch in ("1", "8", "auto"):
        result = run(pytester, world, "good", "data", "--mmlu-baseline", str(baseline), "--mmlu-batch-size", batch)
        result.assert_outcomes(passed=1)

    # A deliberately degraded release fails with the McNemar line.
    result = run(pytester, world, "degraded", "data", "--mmlu-baseline", str(baseline))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["MMLU regression vs baseline: 0.* -> 0.* (n=60; * lost, * gained; McNemar p=0.0* < 0.05)"]
    )

    # Other data: refused, saying how to refresh the baseline.
    result = run(pytester, world, "good", "other_data", "--mmlu-baseline", str(baseline))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*was made on other data (fingerprint differs); create or refresh it with --mmlu-baseline PATH --mmlu-update-baseline"
        ]
    )

    # A failing run never updates the baseline.
    before = baseline.read_text()
    result = run(
        pytester,
        world,
        "degraded",
        "data",
        "--mmlu-baseline",
        str(baseline),
        "--mmlu-update-baseline",
        "-k",
        "nothing_matches_so_no_tests_run",
    )
    result = run(
        pytester,
        world,
        "good",
        "data",
        "--mmlu-baseline",
        str(baseline),
        "--mmlu-update-baseline",
        "--mmlu-batch-size",
        "0",
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    pytester.makepyfile(
        test_extra='import pytest\n@pytest.mark.mmlu(subjects="anatomy", shots=0, limit=5)\n'
        "@pytest.mark.mmlu_accuracy_floor(0.99)\ndef test_floor(mmlu_result):\n    pass\n"
    )
    result = run(pytester, world, "degraded", "data", "--mmlu-baseline", str(baseline), "--mmlu-update-baseline")
    assert f"pytest-mmlu: baseline NOT written to {baseline}: the run did not pass (exit status 1)" in " ".join(
        result.stdout.str().split()
    )  # the summary wraps at 100 columns
    assert baseline.read_text() == before


def test_missing_entry_and_stale_baseline(pytester, world):
    pytester.makepyfile(test_gate=SUITE)
    baseline = pytester.path / "degraded.json"
    run(
        pytester, world, "degraded", "data", "--mmlu-baseline", str(baseline), "--mmlu-update-baseline"
    ).assert_outcomes(passed=1)

    result = run(pytester, world, "good", "data", "--mmlu-baseline", str(baseline))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["NOTE MMLU improved significantly vs baseline (baseline is stale): *"])

    pytester.makepyfile(test_gate=SUITE.replace("test_no_regression", "test_renamed"))
    result = run(pytester, world, "good", "data", "--mmlu-baseline", str(baseline))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "MMLU baseline * has no entry for *test_gate.py::test_renamed (anatomy,*, 2-shot, limit 10); create or refresh it*"
        ]
    )


def test_result_cache(pytester, world, tmp_path, monkeypatch):
    pytester.makepyfile(test_gate=SUITE.replace("@pytest.mark.mmlu_no_regression(max_drop=0.02, alpha=0.05)\n", ""))
    cache = ["--mmlu-cache-dir", str(tmp_path / "cache")]
    report = pytester.path / "r.json"

    def evaluations(*extra, model="good"):
        where = [] if "--mmlu-no-cache" in extra else cache  # the two contradict each other
        run(pytester, world, model, "data", *where, "--mmlu-report", str(report), *extra).assert_outcomes(passed=1)
        data = json.loads(report.read_text())
        return data, data["tests"][0]["evaluations"][0]

    data, first = evaluations()
    assert not first["from_cache"] and data["model"].get("loaded", True)
    data, second = evaluations()
    assert second["from_cache"] and data["model"]["loaded"] is False  # the model was never loaded
    assert [q["loglikelihoods"] for q in second["questions"]] == [q["loglikelihoods"] for q in first["questions"]]

    # Any change misses: settings, model content.
    assert not evaluations("--mmlu-batch-size", "2")[1]["from_cache"]
    assert not evaluations(model="degraded")[1]["from_cache"]
    assert not evaluations("--mmlu-no-cache")[1]["from_cache"]

    # A corrupt entry is ignored and rewritten.
    for entry in (tmp_path / "cache").glob("*.json"):
        if entry.name != "content-hashes.json":
            entry.write_text("{not json")
    assert not evaluations()[1]["from_cache"]
    assert evaluations()[1]["from_cache"]


def test_github_summary_chart_and_compare(pytester, world, monkeypatch):
    pytester.makepyfile(test_gate=SUITE)
    base, new = pytester.path / "base.json", pytester.path / "new.json"
    summary, chart = pytester.path / "summary.md", pytester.path / "chart.png"
    run(pytester, world, "good", "data", "--mmlu-baseline", str(base), "--mmlu-update-baseline")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    run(
        pytester,
        world,
        "degraded",
        "data",
        "--mmlu-baseline",
        str(base),
        "--mmlu-report",
        str(new),
        "--mmlu-chart",
        str(chart),
    ).assert_outcomes(failed=1)
    text = summary.read_text()
    assert (
        "| test | subjects | shots | n | accuracy | 95% CI | floor | vs baseline | peak / budget (GiB) | verdict |"
        in text
    )
    assert "(regressed)" in text and "❌ MMLU regression vs baseline" in text
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    out = subprocess.run(
        [sys.executable, "-m", "pytest_mmlu.cli", "compare", str(base), str(new)], capture_output=True, text=True
    )
    assert out.returncode == 1
    assert "subject" in out.stdout and "anatomy" in out.stdout
    assert "REGRESSED" in out.stdout and "McNemar p(worse)=" in out.stdout


def test_chart_without_matplotlib_says_how(pytester, world, monkeypatch):
    pytester.makepyfile(test_gate=SUITE.replace("@pytest.mark.mmlu_no_regression(max_drop=0.02, alpha=0.05)\n", ""))
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = run(pytester, world, "good", "data", "--mmlu-chart", str(pytester.path / "c.png"))
    result.stdout.fnmatch_lines(
        ["pytest-mmlu: chart not written: --mmlu-chart needs matplotlib: pip install 'pytest-mmlu[chart]'"]
    )


def test_foreign_baseline_file_is_a_usage_error(pytester, world):
    pytester.makepyfile(test_gate=SUITE)
    bad = pytester.path / "bad.json"
    bad.write_text('{"schema": 7, "tests": []}')
    result = run(pytester, world, "good", "data", "--mmlu-baseline", str(bad))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*baseline from command line --mmlu-baseline: *report schema 7 is not supported; this pytest-mmlu reads schema 1*"
        ]
    )


def test_old_or_foreign_reports_fail_clearly(tmp_path):
    from pytest_mmlu.reports.report import ReportError, load_report

    old = tmp_path / "old.json"
    old.write_text(json.dumps({"schema": 0, "tests": []}))
    with pytest.raises(ReportError, match="report schema 0 is not supported; this pytest-mmlu reads schema 1"):
        load_report(old)
    foreign = tmp_path / "f.json"
    foreign.write_text("[1, 2]")
    with pytest.raises(ReportError, match="not a pytest-mmlu report"):
        load_report(foreign)


def test_cache_lives_in_pytest_cache_and_cache_clear_empties_it(pytester, world):
    pytester.makepyfile(test_gate=SUITE.replace("@pytest.mark.mmlu_no_regression(max_drop=0.02, alpha=0.05)\n", ""))
    report = pytester.path / "r.json"

    def from_cache(*extra):
        # --rootdir: .pytest_cache lives in the test project, as in a real one
        pytester.runpytest_inprocess(
            "--mmlu-model",
            str(world["good"]),
            "--mmlu-data",
            str(world["data"]),
            "--mmlu-report",
            str(report),
            "--rootdir",
            str(pytester.path),
            *extra,
        ).assert_outcomes(passed=1)
        return json.loads(report.read_text())["tests"][0]["evaluations"][0]["from_cache"]

    assert not from_cache()
    assert (pytester.path / ".pytest_cache" / "d" / "pytest-mmlu").is_dir()
    assert from_cache()
    assert not from_cache("--cache-clear")
    assert from_cache()
