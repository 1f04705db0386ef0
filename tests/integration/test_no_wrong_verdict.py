"""No silent pass and no crash: missing models in CI, unwritable outputs, unreadable baselines,
parallel baseline updates, empty comparisons and errors that still leave a report row."""

from __future__ import annotations

import fnmatch
import json
import os
import threading

import pytest

SUITE = """
import pytest

@pytest.mark.mmlu(subjects="anatomy", shots=0, limit=2)
def test_marker(mmlu_result):
    pass

def test_fixture(mmlu, mmlu_model):
    mmlu.evaluate("virology", shots=0, limit=1)

@pytest.mark.mmlu_accuracy_floor(0.1)
def test_gate(mmlu):
    mmlu.evaluate("anatomy", shots=0, limit=1)

def test_not_mmlu():
    pass
"""
NO_CACHE = ("-p", "no:cacheprovider")


# -- 1. no silent pass in CI ------------------------------------------------------------------
@pytest.mark.parametrize("ci", ["true", "1", "yes", "TRUE"])
def test_ci_without_a_model_is_a_usage_error(pytester, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    pytester.makepyfile(SUITE)
    result = pytester.runpytest_inprocess(*NO_CACHE)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*pytest-mmlu: 3 MMLU test(s) collected but no model given, and a model is required "
            "(--mmlu-require-model, from environment variable CI): pass --mmlu-model=*--mmlu-allow-skip*"
        ]
    )
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_ci_without_a_model_fails_under_xdist_too(pytester, monkeypatch):
    # A worker's usage error would be an INTERNALERROR traceback: its MMLU tests error instead.
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(SUITE)
    result = pytester.runpytest_subprocess(*NO_CACHE, "-n", "2")
    result.assert_outcomes(passed=1, errors=3)
    result.stdout.fnmatch_lines(["*pytest-mmlu: 3 MMLU test(s) collected but no model given*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize("where", ["cli", "env", "ini"])
def test_require_model_outside_ci(pytester, monkeypatch, where):
    pytester.makepyfile(SUITE)
    args = list(NO_CACHE)
    if where == "cli":
        args.append("--mmlu-require-model")
    elif where == "env":
        monkeypatch.setenv("PYTEST_MMLU_REQUIRE_MODEL", "yes")
    else:
        pytester.makeini("[pytest]\nmmlu_require_model = true\n")
    result = pytester.runpytest_inprocess(*args, "-k", "marker or not_mmlu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    source = {
        "cli": "command line --mmlu-require-model",
        "env": "environment variable PYTEST_MMLU_REQUIRE_MODEL",
        "ini": "ini key mmlu_require_model*",
    }
    # -k deselects two of the three MMLU tests: only the ones that would run count.
    result.stderr.fnmatch_lines([f"*pytest-mmlu: 1 MMLU test(s) collected but no model given*from {source[where]}*"])


@pytest.mark.parametrize("how", ["cli", "env", "ini", "require_model=0"])
def test_allow_skip_turns_the_ci_default_off_and_skips_are_counted(pytester, monkeypatch, how):
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(SUITE)
    args = list(NO_CACHE)
    if how == "cli":
        args.append("--mmlu-allow-skip")
    elif how == "env":
        monkeypatch.setenv("PYTEST_MMLU_ALLOW_SKIP", "1")
    elif how == "ini":
        pytester.makeini("[pytest]\nmmlu_allow_skip = true\n")
    else:
        monkeypatch.setenv("PYTEST_MMLU_REQUIRE_MODEL", "0")
    result = pytester.runpytest_inprocess(*args)
    result.assert_outcomes(passed=1, skipped=3)
    result.stdout.fnmatch_lines(["*MMLU summary*", "pytest-mmlu: 3 MMLU test(s) skipped: no model (pass --mmlu-model)"])


def test_without_ci_skips_are_counted_in_the_summary(pytester):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest_inprocess(*NO_CACHE, "-q")
    result.assert_outcomes(passed=1, skipped=3)
    result.stdout.fnmatch_lines(["*MMLU summary*", "pytest-mmlu: 3 MMLU test(s) skipped: no model (pass --mmlu-model)"])


def test_ci_run_without_mmlu_tests_passes(pytester, monkeypatch):
    # Our own suite runs with CI=true: a project with no MMLU test must not fail.
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile("def test_a():\n    pass\n")
    result = pytester.runpytest_inprocess(*NO_CACHE)
    assert result.ret == pytest.ExitCode.OK
    assert "MMLU" not in result.stdout.str()


def test_ci_collect_only_lists_the_gates(pytester, monkeypatch):
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(SUITE)
    result = pytester.runpytest_inprocess(*NO_CACHE, "--co", "-q")
    assert result.ret == pytest.ExitCode.OK


# -- 2. outputs that cannot be written --------------------------------------------------------
@pytest.mark.parametrize("option", ["--mmlu-report", "--mmlu-baseline"])
def test_unwritable_output_is_a_one_line_usage_error_before_any_evaluation(
    pytester, tiny_model_dir, mmlu_csv_dir, option
):
    pytester.makepyfile(SUITE)
    blocker = pytester.path / "blocker"
    blocker.write_text("a regular file\n")
    path = blocker / "sub" / "out.json"
    extra = ["--mmlu-update-baseline"] if option == "--mmlu-baseline" else []
    result = pytester.runpytest_inprocess(
        "--mmlu-model", str(tiny_model_dir), "--mmlu-data", str(mmlu_csv_dir), *NO_CACHE, option, str(path), *extra
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    what = option.removeprefix("--mmlu-")
    result.stderr.fnmatch_lines(
        [
            f"ERROR: pytest-mmlu: {what} path {path} from command line {option} "
            f"cannot be written: {blocker} is not a directory"
        ]
    )
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
    assert "collected" not in result.stdout.str()  # stopped before collection, let alone evaluation
    assert blocker.read_text() == "a regular file\n"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_report_folder_is_a_usage_error(pytester):
    ro = pytester.path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        pytester.makepyfile("def test_a():\n    pass\n")
        result = pytester.runpytest_inprocess(*NO_CACHE, "--mmlu-report", str(ro / "r.json"))
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"*report path {ro / 'r.json'} * cannot be written: cannot create files in {ro}*"])
    finally:
        ro.chmod(0o755)


def test_report_that_becomes_unwritable_during_the_run_is_a_note_and_a_failed_run(
    pytester, tiny_model_dir, mmlu_csv_dir
):
    out = pytester.path / "out"
    pytester.makepyfile(f"""
import pathlib, pytest

@pytest.mark.mmlu(subjects="anatomy", shots=0, limit=1)
def test_marker(mmlu_result):
    pathlib.Path({str(out)!r}).write_text("now a file")
""")
    report = out / "report.json"
    result = pytester.runpytest_inprocess(
        "--mmlu-model", str(tiny_model_dir), "--mmlu-data", str(mmlu_csv_dir), *NO_CACHE, "--mmlu-report", str(report)
    )
    # The summary wraps at 100 columns: the note may span lines.
    assert f"pytest-mmlu: report NOT written to {report}: " in " ".join(result.stdout.str().split())
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the verdict asked for was not written
    assert out.read_text() == "now a file" and not list(pytester.path.glob("**/.report.json.*"))


# -- 4. an unreadable baseline is never overwritten -------------------------------------------
@pytest.mark.parametrize("content", ["{not json", '{"schema": 7, "tests": []}', "[1, 2]"])
def test_update_baseline_refuses_to_overwrite_an_unreadable_file(pytester, tiny_model_dir, mmlu_csv_dir, content):
    pytester.makepyfile(SUITE)
    baseline = pytester.path / "baseline.json"
    baseline.write_text(content)
    result = pytester.runpytest_inprocess(
        "--mmlu-model",
        str(tiny_model_dir),
        "--mmlu-data",
        str(mmlu_csv_dir),
        *NO_CACHE,
        "--mmlu-baseline",
        str(baseline),
        "--mmlu-update-baseline",
        "-k",
        "marker",
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"ERROR: pytest-mmlu: baseline from command line --mmlu-baseline: {baseline}: *"
            "--mmlu-update-baseline does not overwrite a file it cannot read*"
        ]
    )
    assert baseline.read_text() == content


def test_write_baseline_refuses_a_file_that_became_unreadable(tmp_path):
    from pytest_mmlu.reports.baseline import BaselineWriteError, write_baseline

    path = tmp_path / "b.json"
    path.write_text("{not json")
    with pytest.raises(BaselineWriteError, match="not overwriting a file it cannot read"):
        write_baseline(str(path), _report("t.py::test_a"))
    assert path.read_text() == "{not json"


# -- 5. parallel baseline updates lose nothing ------------------------------------------------
def _report(*nodeids: str) -> dict:
    return {
        "schema": 1,
        "tests": [{"nodeid": n, "outcome": "passed", "evaluations": [_evaluation(n)]} for n in nodeids],
    }


def _evaluation(seed: str, n: int = 4) -> dict:
    correct = [(hash(seed) >> i) & 1 for i in range(n)]
    return {
        "subjects": ["anatomy"],
        "label": "anatomy",
        "shots": 0,
        "limit": n,
        "n": n,
        "accuracy": sum(correct) / n,
        "ci95": [0.0, 1.0],
        "data_fingerprint": "f",
        "per_subject": {"anatomy": {"accuracy": sum(correct) / n, "n": n}},
        "questions": [
            {"subject": "anatomy", "index": i, "target": 0, "prediction": 1 - c, "loglikelihoods": [0.0] * 4}
            for i, c in enumerate(correct)
        ],
    }


def test_parallel_baseline_updates_keep_every_entry(tmp_path, monkeypatch):
    import time

    from pytest_mmlu.reports import report as reports
    from pytest_mmlu.reports.baseline import write_baseline

    path = tmp_path / "baseline.json"
    reports.write_json_atomic(path, _report("t.py::test_old"))
    real_write = reports.write_json_atomic

    def slow_write(target, data):  # widen the read-merge-write window as a slow disk would
        time.sleep(0.3)
        real_write(target, data)

    monkeypatch.setattr(reports, "write_json_atomic", slow_write)
    jobs = [threading.Thread(target=write_baseline, args=(str(path), _report(f"t.py::test_{i}"))) for i in range(4)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    names = sorted(t["nodeid"] for t in json.loads(path.read_text())["tests"])
    assert names == ["t.py::test_0", "t.py::test_1", "t.py::test_2", "t.py::test_3", "t.py::test_old"]


# -- 3. compare with nothing comparable -------------------------------------------------------
def test_compare_with_nothing_comparable_exits_2(tmp_path, capsys):
    from pytest_mmlu.cli import main
    from pytest_mmlu.reports.report import write_json_atomic

    old, new, same = tmp_path / "old.json", tmp_path / "new.json", tmp_path / "same.json"
    write_json_atomic(old, _report("t.py::test_a"))
    write_json_atomic(new, _report("t.py::test_renamed"))
    write_json_atomic(same, _report("t.py::test_a"))
    assert main(["compare", str(old), str(new)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"pytest-mmlu compare: nothing comparable: no evaluation of {new} matches one of {old} "
        "(same test, subjects, shots, limit, data and questions), and no gate of it was judged"
    ]
    assert main(["compare", str(old), str(same)]) == 0


# -- 6. errors still leave a report row -------------------------------------------------------
def test_data_error_gets_a_report_row_and_a_summary_line(pytester, tiny_model_dir, mmlu_csv_dir, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(mmlu_csv_dir, root)
    (root / "test" / "anatomy_test.csv").write_text('"q","a","b"\n')
    pytester.makepyfile(SUITE)
    report = pytester.path / "r.json"
    result = pytester.runpytest_inprocess(
        "--mmlu-model",
        str(tiny_model_dir),
        "--mmlu-data",
        str(root),
        *NO_CACHE,
        "--mmlu-report",
        str(report),
        "-k",
        "marker or gate",
    )
    result.assert_outcomes(errors=1, failed=1)
    line = "pytest-mmlu: MMLU data error: *anatomy_test.csv:1: expected 6 columns (question,A,B,C,D,answer), found 3"
    result.stdout.fnmatch_lines(
        [
            "*MMLU summary*",
            "*test_gate*",
            "*anatomy*0*BREACH",
            "*test_marker*",
            "*anatomy*BREACH",
            "BREACH pytest-mmlu: MMLU data error:*",
        ]
    )
    text = " ".join(result.stdout.str().split())  # the summary wraps at 100 columns
    assert fnmatch.fnmatch(text, f"*BREACH {line}*")
    tests = {t["nodeid"].split("::")[1]: t for t in json.loads(report.read_text())["tests"]}
    assert {k: v["outcome"] for k, v in tests.items()} == {"test_marker": "error", "test_gate": "failed"}
    for test in tests.values():
        (ev,) = test["evaluations"]
        assert ev["n"] == 0 and ev["accuracy"] is None and ev["subjects"] == ["anatomy"]
        assert len(ev["breaches"]) == 1 and "MMLU data error" in ev["breaches"][0]


def test_a_variant_that_cannot_load_gets_a_report_row(pytester, tiny_model_dir, mmlu_csv_dir):
    """Only the session's own variant's load error was looked up: a test whose mmlu_model
    variant failed to load (nf4 needs CUDA) errored with no row in the report."""
    pytester.makepyfile("""
import pytest

@pytest.mark.mmlu_variant(quantization="nf4")
def test_model(mmlu_model):
    pass
""")
    report = pytester.path / "r.json"
    result = pytester.runpytest_inprocess(
        "--mmlu-model", str(tiny_model_dir), "--mmlu-data", str(mmlu_csv_dir), *NO_CACHE, "--mmlu-report", str(report)
    )
    result.assert_outcomes(errors=1)
    (test,) = json.loads(report.read_text())["tests"]
    assert test["outcome"] == "error"
    (ev,) = test["evaluations"]
    assert ev["n"] == 0 and ev["breaches"][0].startswith("pytest-mmlu: ") and "nf4" in ev["breaches"][0]


def test_model_load_error_gets_a_report_row_for_every_test(pytester, mmlu_csv_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    pytester.makepyfile(SUITE)
    report = pytester.path / "r.json"
    result = pytester.runpytest_inprocess(
        "--mmlu-model",
        "nobody/no-such-model",
        "--mmlu-data",
        str(mmlu_csv_dir),
        *NO_CACHE,
        "--mmlu-report",
        str(report),
    )
    result.assert_outcomes(passed=1, errors=2, failed=1)
    assert "Traceback" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*MMLU summary*", "BREACH pytest-mmlu: cannot load model 'nobody/no-such-model'*"])
    tests = {t["nodeid"].split("::")[1]: t for t in json.loads(report.read_text())["tests"]}
    assert sorted(tests) == ["test_fixture", "test_gate", "test_marker"]
    assert tests["test_fixture"]["outcome"] == "error" and tests["test_fixture"]["evaluations"][0]["shots"] is None
    for test in tests.values():
        (ev,) = test["evaluations"]
        assert ev["n"] == 0 and ev["breaches"][0].startswith("pytest-mmlu: cannot load model 'nobody/no-such-model'")


# -- non-finite scores and engine modes, from a real model end to end ---------------------------
@pytest.fixture(scope="module")
def nan_model_dir(tmp_path_factory):
    """A tiny llama whose final norm has a NaN weight: every score it gives is NaN.
    (Module-scoped: built before pytester snapshots sys.modules, so torch stays imported.)"""
    import torch
    from factories import make_model, make_tokenizer

    folder = tmp_path_factory.mktemp("models") / "nan-llama"
    tokenizer = make_tokenizer()
    model = make_model("llama", len(tokenizer))
    with torch.no_grad():
        model.model.norm.weight[0] = float("nan")
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def remote_code_dir(tmp_path_factory):
    from factories import save_remote_code_model

    return save_remote_code_model(tmp_path_factory.mktemp("models") / "own-attention")


def test_a_model_giving_nan_errors_with_the_non_finite_line(nan_model_dir, pytester, mmlu_csv_dir):
    model = nan_model_dir
    pytester.makepyfile("""
import pytest

@pytest.mark.mmlu(subjects="anatomy", shots=5, limit=3)
@pytest.mark.mmlu_accuracy_floor(0.0)
def test_gate(mmlu_result):
    pass
""")
    result = pytester.runpytest_inprocess("--mmlu-model", str(model), "--mmlu-data", str(mmlu_csv_dir), *NO_CACHE)
    result.assert_outcomes(errors=1)  # the marker's evaluation errors in setup
    result.stdout.fnmatch_lines(
        [
            "*MMLU scores are not finite (NaN) for 3 of 3 questions: anatomy#0, "
            "anatomy#1, anatomy#2 (dtype float32, device cpu)*"
        ]
    )
    result.stdout.no_fnmatch_line("*Traceback*")


def test_the_summary_says_when_an_evaluation_ran_in_plain_batches(remote_code_dir, pytester, mmlu_csv_dir):
    model = remote_code_dir
    pytester.makepyfile("""
import pytest

@pytest.mark.mmlu(subjects="anatomy", shots=5, limit=2)
def test_gate(mmlu_result):
    assert mmlu_result.engine_mode == "plain"
""")
    result = pytester.runpytest_inprocess(
        "--mmlu-model", str(model), "--mmlu-data", str(mmlu_csv_dir), "--mmlu-trust-remote-code", *NO_CACHE
    )
    result.assert_outcomes(passed=1)
    assert (
        "test_gate: scored in plain batches, no shared prefix: the model's own code computes attention "
        "(attention of 2 of 2 layers bypassed"
    ) in " ".join(result.stdout.str().split())  # wrapped at 100


def test_out_of_memory_at_batch_1_fails_the_gate_with_a_line(pytester, tiny_model_dir, mmlu_csv_dir):
    pytester.makeconftest("""
import pytest
from pytest_mmlu.engine import scoring

@pytest.fixture(autouse=True)
def _device_full(monkeypatch):
    def forward(calls, batch, prefix_len, prefix, stats):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(scoring, "forward", forward)
""")
    pytester.makepyfile("""
import pytest

@pytest.mark.mmlu(subjects="anatomy", shots=0, limit=1)
@pytest.mark.mmlu_memory_budget("20 GiB")
def test_gate(mmlu_result):
    pass
""")
    result = pytester.runpytest_inprocess(
        "--mmlu-model", str(tiny_model_dir), "--mmlu-data", str(mmlu_csv_dir), *NO_CACHE
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*MMLU evaluation ran out of memory on cpu at batch 1 (a row of * tokens "
            "after a 0-token prefix) (budget 20.00 GiB)*"
        ]
    )
    result.stdout.no_fnmatch_line("*Traceback*")


def test_no_way_to_measure_memory_is_one_line_not_a_traceback(pytester, tiny_model_dir, mmlu_csv_dir):
    pytester.makepyfile("""
import sys
import pytest
from pytest_mmlu.memory import meters as memory

@pytest.fixture(autouse=True)
def _no_proc_no_psutil(monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "_PROC_STATUS", str(tmp_path / "no-proc" / "status"))
    monkeypatch.setitem(sys.modules, "psutil", None)

@pytest.mark.mmlu(subjects="anatomy", shots=0, limit=1)
def test_gate(_no_proc_no_psutil, mmlu_result):
    pass
""")
    result = pytester.runpytest_inprocess(
        "--mmlu-model", str(tiny_model_dir), "--mmlu-data", str(mmlu_csv_dir), *NO_CACHE
    )
    assert result.ret != 0
    result.stdout.fnmatch_lines(
        ["*pytest-mmlu: cannot measure memory on *: there is no * and psutil is not installed: pip install psutil*"]
    )
    result.stdout.no_fnmatch_line("*Traceback*")
