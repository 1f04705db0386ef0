"""Every gated test has a record on every path, marks at several levels combine by a stated
rule, and options that contradict each other are refused at start-up."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

NO_CACHE = ("-p", "no:cacheprovider", "--mmlu-no-cache")


def run(pytester, model, data, *extra, subprocess_run=False):
    args = (f"--mmlu-model={model}", f"--mmlu-data={data}", *NO_CACHE, *extra)
    return (pytester.runpytest_subprocess if subprocess_run else pytester.runpytest_inprocess)(*args)


def records(report_path) -> dict:
    return {t["nodeid"].split("::", 1)[1]: t for t in json.loads(report_path.read_text())["tests"]}


# -- every gated test has a record ------------------------------------------------------------
OUTCOMES = """
import pytest

@pytest.fixture
def broken():
    raise RuntimeError("a fixture of the test's own")

@pytest.mark.mmlu(subjects="anatomy", shots=0, limit=2)
def test_passes(mmlu_result):
    pass

@pytest.mark.mmlu_accuracy_floor(0.1)
def test_fails_before_evaluating(mmlu):
    assert False, "the test's own assertion"

@pytest.mark.mmlu(subjects="anatomy", shots=0, limit=2)
def test_errors_in_setup(broken, mmlu_result):
    pass

@pytest.mark.mmlu(subjects="anatomy", shots=0, limit=2)
@pytest.mark.skip(reason="not today")
def test_skipped(mmlu_result):
    pass

@pytest.mark.mmlu(subjects="anatomy", shots=0, limit=2)
def test_errors_in_teardown(mmlu_result, request):
    request.addfinalizer(lambda: 1 / 0)

def test_not_mmlu():
    pass
"""


def test_every_mmlu_test_has_a_record_whatever_happens_to_it(pytester, tiny_model_dir, mmlu_csv_dir):
    pytester.makepyfile(test_gate=OUTCOMES)
    report = pytester.path / "r.json"
    result = run(pytester, tiny_model_dir, mmlu_csv_dir, f"--mmlu-report={report}")
    result.assert_outcomes(passed=3, failed=1, errors=2, skipped=1)  # a teardown error counts twice
    found = records(report)
    assert {k: v["outcome"] for k, v in found.items()} == {
        "test_passes": "passed",
        "test_fails_before_evaluating": "failed",
        "test_errors_in_setup": "error",
        "test_skipped": "skipped",
        "test_errors_in_teardown": "error",
    }
    assert found["test_fails_before_evaluating"]["breaches"] == [
        "pytest-mmlu: accuracy floor 0.100 declared, never evaluated: the test failed before it evaluated"
    ]
    assert found["test_errors_in_setup"]["breaches"] == [
        "pytest-mmlu: MMLU evaluation anatomy 0-shot limit 2 declared, never evaluated: the test errored "
        "before it evaluated"
    ]
    assert found["test_skipped"]["verdicts"][0]["kind"] == "skipped" and not found["test_skipped"]["breaches"]
    result.stdout.fnmatch_lines(
        [
            "*MMLU summary*",
            "BREACH pytest-mmlu: accuracy floor 0.100 declared, never evaluated: the test failed before it*",
        ]
    )


def test_a_test_that_never_ran_has_a_record(pytester, tiny_model_dir, mmlu_csv_dir):
    pytester.makepyfile(
        test_gate="""
import pytest

def test_fails_first():
    assert False

@pytest.mark.mmlu(subjects="anatomy", shots=0, limit=2)
def test_gated(mmlu_result):
    pass
"""
    )
    report = pytester.path / "r.json"
    run(pytester, tiny_model_dir, mmlu_csv_dir, f"--mmlu-report={report}", "-x").assert_outcomes(failed=1)
    found = records(report)
    assert found["test_gated"]["outcome"] == "not run"  # -x stopped the run before it
    assert found["test_gated"]["breaches"] == [
        "pytest-mmlu: MMLU evaluation anatomy 0-shot limit 2 declared, never evaluated: the test did not run"
    ]


CRASH = """
import os
import pytest

@pytest.mark.mmlu(subjects="anatomy", shots=0, limit=2)
@pytest.mark.mmlu_accuracy_floor(0.0)
def test_crashes(mmlu_result):
    os._exit(3)  # the worker dies: no teardown, no report of its own

@pytest.mark.mmlu(subjects="virology", shots=0, limit=2)
def test_survives(mmlu_result):
    pass
"""


@pytest.mark.slow  # xdist workers start torch: 20 s
def test_a_test_whose_xdist_worker_crashed_has_a_record(pytester, tiny_model_dir, mmlu_csv_dir):
    pytester.makepyfile(test_gate=CRASH)
    report = pytester.path / "r.json"
    result = run(pytester, tiny_model_dir, mmlu_csv_dir, f"--mmlu-report={report}", "-n", "2", subprocess_run=True)
    assert result.ret == 1
    found = records(report)
    assert found["test_survives"]["outcome"] == "passed" and found["test_survives"]["evaluations"][0]["n"] == 2
    assert found["test_crashes"]["outcome"] == "crashed"
    assert found["test_crashes"]["breaches"] == [
        "pytest-mmlu: MMLU evaluation anatomy 0-shot limit 2, accuracy floor 0.000 declared, never evaluated: "
        "its worker crashed"
    ]


def merge(*args):
    return subprocess.run(
        [sys.executable, "-m", "pytest_mmlu.cli", "merge", *map(str, args)], capture_output=True, text=True
    )


def test_a_gate_that_fails_before_evaluating_in_every_shard_fails_the_merge(pytester, tiny_model_dir, mmlu_csv_dir):
    """It was missing from the merged result, and merge exited 0."""
    pytester.makepyfile(
        test_gate="""
import pytest

@pytest.mark.mmlu_accuracy_floor(0.1)
def test_body_fails_first(mmlu):
    assert False
    mmlu.evaluate("anatomy", shots=0, limit=4)

@pytest.mark.mmlu(subjects="virology", shots=0, limit=4)
def test_fine(mmlu_result):
    pass
"""
    )
    shards = [pytester.path / f"s{i}.json" for i in (1, 2)]
    for i, path in enumerate(shards, start=1):
        run(pytester, tiny_model_dir, mmlu_csv_dir, f"--mmlu-shard={i}/2", f"--mmlu-report={path}")
    out = merge(*shards, "-o", pytester.path / "m.json")
    assert out.returncode == 1, out.stdout
    assert (
        "BREACH pytest-mmlu: accuracy floor 0.100 declared, never evaluated: the test failed before it evaluated"
    ) in " ".join(out.stdout.split())
    found = records(pytester.path / "m.json")
    assert found["test_body_fails_first"]["outcome"] == "failed" and found["test_fine"]["outcome"] == "passed"


def test_a_test_that_evaluated_in_some_shards_only_is_never_judged_as_whole(
    pytester, tiny_model_dir, mmlu_csv_dir, monkeypatch
):
    pytester.makepyfile(
        test_gate="""
import os
import pytest

@pytest.mark.mmlu_accuracy_floor(0.0)
def test_flaky(mmlu):
    if os.environ.get("FAIL_HERE"):
        raise RuntimeError("only in this shard")
    mmlu.evaluate("anatomy", shots=0, limit=6)
"""
    )
    shards = [pytester.path / f"s{i}.json" for i in (1, 2)]
    run(pytester, tiny_model_dir, mmlu_csv_dir, "--mmlu-shard=1/2", f"--mmlu-report={shards[0]}")
    monkeypatch.setenv("FAIL_HERE", "1")
    run(pytester, tiny_model_dir, mmlu_csv_dir, "--mmlu-shard=2/2", f"--mmlu-report={shards[1]}")
    out = merge(*shards)
    assert out.returncode == 1
    assert "declared, never evaluated: the shards made different evaluations (1 in" in " ".join(out.stdout.split())


# -- marks at several levels --------------------------------------------------------------------
LEVELS = """
import pytest

pytestmark = [pytest.mark.mmlu_accuracy_floor(0.99, per_subject={"virology": 0.2}),
              pytest.mark.mmlu_memory_budget("1 MiB")]

@pytest.mark.mmlu_accuracy_floor(0.0, per_subject={"virology": 0.99, "anatomy": 0.0})
class TestStacked:
    @pytest.mark.mmlu(subjects=["anatomy", "virology"], shots=0, limit=3)
    @pytest.mark.mmlu_memory_budget("64 GiB")
    @pytest.mark.mmlu_accuracy_floor(0.0)
    def test_strictest(self, mmlu_result):
        pass
"""


def test_every_mark_at_every_level_applies(pytester, tiny_model_dir, mmlu_csv_dir):
    pytester.makepyfile(test_gate=LEVELS)
    report = pytester.path / "r.json"
    result = run(pytester, tiny_model_dir, mmlu_csv_dir, f"--mmlu-report={report}")
    result.assert_outcomes(failed=1)
    (record,) = records(report).values()
    # The module's 1 MiB budget binds (the smallest), and the strictest floors are kept.
    assert record["gates"]["budget_bytes"] == 2**20
    assert record["gates"]["floor"] == {"min": 0.99, "per_subject": {"virology": 0.99, "anatomy": 0.0}}
    assert [v["kind"] for v in record["evaluations"][0]["verdicts"]] == ["budget"]


@pytest.mark.parametrize(
    "body,message",
    [
        (
            '@pytest.mark.mmlu(subjects="anatomy")\nclass TestX:\n    @pytest.mark.mmlu(subjects="virology")\n'
            "    def test_x(self, mmlu_result):\n        pass\n",
            "*TestX::test_x: 2 @pytest.mark.mmlu marks apply (@pytest.mark.mmlu(subjects='virology') on the function; "
            "@pytest.mark.mmlu(subjects='anatomy') on class TestX): a test declares one evaluation*",
        ),
        (
            'pytestmark = pytest.mark.mmlu_variant(quantization="int8")\n'
            '@pytest.mark.mmlu_variant(quantization="int4")\ndef test_x(mmlu_model):\n    pass\n',
            "*test_x: @pytest.mark.mmlu_variant(quantization='int4') on the function and "
            "@pytest.mark.mmlu_variant(quantization='int8') in module test_gate.py give quantization two values: "
            "give it once",
        ),
    ],
)
def test_marks_that_cannot_combine_are_a_collection_error(pytester, body, message):
    pytester.makepyfile(test_gate="import pytest\n" + body)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_variant_marks_at_several_levels_join(pytester, tiny_model_dir, tmp_path):
    from pytest_mmlu.markers import VariantMark
    from pytest_mmlu.marks import read_item_marks

    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    pytester.makepyfile(
        test_gate=f"""
import pytest
pytestmark = pytest.mark.mmlu_variant(quantization="int8")
@pytest.mark.mmlu_variant(adapter={str(adapter)!r})
def test_x():
    pass
"""
    )
    items, _ = pytester.inline_genitems("-p", "no:cacheprovider")
    assert read_item_marks(items[0]).variant == VariantMark("int8", str(adapter.resolve()), None)


# -- contradictory options -----------------------------------------------------------------------
CONTRADICTIONS = [
    (
        ["--mmlu-shard=1/2", "--mmlu-baseline={tmp}/b.json", "--mmlu-update-baseline"],
        "--mmlu-update-baseline (from command line --mmlu-update-baseline) contradicts --mmlu-shard 1/2 (from "
        "command line --mmlu-shard): a shard holds part of each evaluation*",
    ),
    (
        ["--mmlu-shard=1/2", "--mmlu-baseline={tmp}/b.json"],
        "--mmlu-baseline {tmp}/b.json (from command line --mmlu-baseline) contradicts --mmlu-shard 1/2 *: a shard "
        "judges no regression*",
    ),
    (["--mmlu-shard=2/3", "--mmlu-report-lm-eval={tmp}/lm"], "--mmlu-report-lm-eval * contradicts --mmlu-shard 2/3*"),
    (["--mmlu-merge-adapter"], "--mmlu-merge-adapter (from command line --mmlu-merge-adapter) needs --mmlu-adapter*"),
    (["--mmlu-no-cache", "--mmlu-cache-dir={tmp}/c"], "--mmlu-no-cache * contradicts --mmlu-cache-dir *"),
    (["--mmlu-require-model", "--mmlu-allow-skip"], "--mmlu-require-model * contradicts --mmlu-allow-skip *"),
    (["--mmlu-device=cpu", "--mmlu-quantization=nf4"], "--mmlu-quantization nf4 * contradicts --mmlu-device cpu *"),
    (["--mmlu-device=cpu", "--mmlu-device-map=auto"], "--mmlu-device-map auto * contradicts --mmlu-device cpu *"),
    (["--mmlu-revision=main"], "--mmlu-revision main * contradicts --mmlu-model *: a revision names a hub commit*"),
    (
        ["--mmlu-report={tmp}/b.json", "--mmlu-baseline={tmp}/b.json"],
        "--mmlu-report {tmp}/b.json * contradicts --mmlu-baseline {tmp}/b.json *: they name the same file*",
    ),
    (["--mmlu-fewshot-as-multiturn"], "--mmlu-fewshot-as-multiturn from * needs --mmlu-chat-template*"),
]


@pytest.mark.parametrize(
    "args,line", CONTRADICTIONS, ids=[c[1].split(" ")[0] + "+" + str(i) for i, c in enumerate(CONTRADICTIONS)]
)
def test_contradictory_options_are_refused_at_start_up_naming_both(pytester, tiny_model_dir, args, line):
    pytester.makepyfile("def test_x():\n    pass\n")
    tmp = str(pytester.path)
    result = pytester.runpytest_inprocess(
        f"--mmlu-model={tiny_model_dir}", "-p", "no:cacheprovider", *(a.format(tmp=tmp) for a in args)
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*pytest-mmlu: {line.format(tmp=tmp)}"])


def test_an_option_of_higher_precedence_overrides_rather_than_contradicts(pytester, monkeypatch):
    """A project's ini asks for a model; a developer's --mmlu-allow-skip lets the tests skip."""
    pytester.makeini("[pytest]\nmmlu_require_model = true\n")
    pytester.makepyfile('import pytest\n@pytest.mark.mmlu(subjects="anatomy")\ndef test_x(mmlu_result):\n    pass\n')
    pytester.runpytest_inprocess("-p", "no:cacheprovider", "--mmlu-allow-skip").assert_outcomes(skipped=1)


def test_merge_refuses_to_write_over_its_baseline(tmp_path):
    baseline = tmp_path / "b.json"
    baseline.write_text("{}")
    out = merge(tmp_path / "s1.json", "--baseline", baseline, "-o", baseline)
    assert out.returncode == 2 and "is the --baseline file" in out.stderr
    assert baseline.read_text() == "{}"


# -- found by the adversarial pass on the records and the judge -----------------------------------
def test_one_evaluation_asked_by_two_specs_is_recorded_as_each_asked(pytester, tiny_model_dir, mmlu_csv_dir, tmp_path):
    """limit=None and limit=50 of a 6-question subject are the same questions (one identity):
    the cache served the first spec's result, labelled limit None, to the second, whose
    baseline entry and full-precision reference were then not found."""
    pytester.makepyfile(
        test_gate="""
import pytest

@pytest.mark.mmlu(subjects=["anatomy", "virology"], shots=0)
@pytest.mark.mmlu_no_regression(max_drop=1.0)
def test_all(mmlu_result):
    pass

@pytest.mark.mmlu(subjects=["virology", "anatomy"], shots=0, limit=50)
@pytest.mark.mmlu_no_regression(max_drop=1.0)
def test_limit_50(mmlu_result):
    assert mmlu_result.limit == 50 and mmlu_result.label == "virology,anatomy"
"""
    )
    cache, baseline = f"--mmlu-cache-dir={tmp_path / 'c'}", f"--mmlu-baseline={tmp_path / 'b.json'}"
    args = (f"--mmlu-model={tiny_model_dir}", f"--mmlu-data={mmlu_csv_dir}", "-p", "no:cacheprovider", cache, baseline)
    pytester.runpytest_inprocess(*args, "--mmlu-update-baseline").assert_outcomes(passed=2)
    report = pytester.path / "r.json"
    pytester.runpytest_inprocess(*args, f"--mmlu-report={report}").assert_outcomes(passed=2)
    found = records(report)
    assert all(e["from_cache"] for t in found.values() for e in t["evaluations"])
    assert found["test_limit_50"]["evaluations"][0]["limit"] == 50


XFAIL = """
import pytest

@pytest.mark.mmlu(subjects=["anatomy", "virology"], shots=0, limit=6)
@pytest.mark.mmlu_accuracy_floor(0.99)
@pytest.mark.xfail(reason="a floor known to fail", strict={strict})
def test_known_to_fail(mmlu_result):
    pass
"""


def test_an_expected_failure_is_never_written_into_the_baseline(pytester, tiny_model_dir, mmlu_csv_dir):
    pytester.makepyfile(test_gate=XFAIL.format(strict=False))
    baseline = pytester.path / "b.json"
    result = run(pytester, tiny_model_dir, mmlu_csv_dir, f"--mmlu-baseline={baseline}", "--mmlu-update-baseline")
    result.assert_outcomes(xfailed=1)
    result.stdout.fnmatch_lines(
        ["*baseline NOT written to*", "*a gate of test_gate.py::test_known_to_fail did not hold*"]
    )
    assert not baseline.exists()


def test_a_strict_xfail_gets_the_unsharded_verdict_at_merge(pytester, tiny_model_dir, mmlu_csv_dir):
    """In a shard the floor is deferred, so the test passed and strict xfail failed the shard;
    unsharded, the floor fails and the test is an expected failure."""
    pytester.makepyfile(test_gate=XFAIL.format(strict=True))
    run(pytester, tiny_model_dir, mmlu_csv_dir).assert_outcomes(xfailed=1)
    shards = [pytester.path / f"s{i}.json" for i in (1, 2)]
    for i, path in enumerate(shards, start=1):
        result = run(pytester, tiny_model_dir, mmlu_csv_dir, f"--mmlu-shard={i}/2", f"--mmlu-report={path}")
        assert result.ret == 0  # undecided here: its floor is judged at merge
    out = merge(*shards, "-o", pytester.path / "m.json")
    assert out.returncode == 0, out.stdout
    assert records(pytester.path / "m.json")["test_known_to_fail"]["outcome"] == "xfailed"


XFAIL_RAISES = """
import pytest

@pytest.mark.mmlu(subjects=["anatomy", "virology"], shots=0, limit=6)
@pytest.mark.mmlu_accuracy_floor(0.99)
{xfail}
def test_known_flaky(mmlu_result):
    {body}
"""


@pytest.mark.parametrize(
    "xfail, body, unsharded",
    [
        ('@pytest.mark.xfail(raises=RuntimeError, reason="excuses only this")', "pass", "failed"),
        ('@pytest.mark.xfail(raises=pytest.fail.Exception, reason="a gate")', "pass", "xfailed"),
        ("", 'pytest.xfail("imperative: reached only when the gates held")', "failed"),
    ],
    ids=["raises-other", "raises-a-gate-failure", "imperative"],
)
def test_an_xfail_excuses_a_gate_as_pytest_would_unsharded(
    pytester, tiny_model_dir, mmlu_csv_dir, xfail, body, unsharded
):
    """xfail(raises=RuntimeError) does not take a breached floor as its expected failure, nor a
    pytest.xfail() in the body that the unsharded gate failure comes before: the merged shards
    say what the unsharded run says."""
    pytester.makepyfile(test_gate=XFAIL_RAISES.format(xfail=xfail, body=body))
    plain = pytester.path / "plain.json"
    run(pytester, tiny_model_dir, mmlu_csv_dir, f"--mmlu-report={plain}")
    assert records(plain)["test_known_flaky"]["outcome"] == unsharded
    shards = [pytester.path / f"s{i}.json" for i in (1, 2)]
    for i, path in enumerate(shards, start=1):
        run(pytester, tiny_model_dir, mmlu_csv_dir, f"--mmlu-shard={i}/2", f"--mmlu-report={path}")
    out = merge(*shards, "-o", pytester.path / "m.json")
    assert records(pytester.path / "m.json")["test_known_flaky"]["outcome"] == unsharded
    assert out.returncode == (1 if unsharded == "failed" else 0), out.stdout


def test_a_breach_in_set_up_stands_when_a_later_fixture_skips(pytester, tiny_model_dir, mmlu_csv_dir):
    pytester.makepyfile(
        test_gate="""
import pytest

@pytest.fixture
def later():
    pytest.skip("a fixture that skips after the evaluation")

@pytest.mark.mmlu(subjects="anatomy", shots=0, limit=4)
@pytest.mark.mmlu_accuracy_floor(0.99)
def test_x(mmlu_result, later):
    pass
"""
    )
    result = run(pytester, tiny_model_dir, mmlu_csv_dir)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*MMLU accuracy * < floor 0.990*"])


@pytest.mark.parametrize("mode", ["--collect-only", "--setup-plan", "--setup-only"])
def test_a_run_of_no_test_body_writes_no_verdict(pytester, tiny_model_dir, mmlu_csv_dir, mode):
    """A report left by a real run (CI's PYTEST_MMLU_REPORT) is not replaced by the verdicts of
    tests that never ran."""
    pytester.makepyfile(test_gate=OUTCOMES)
    report = pytester.path / "r.json"
    report.write_text("{}")
    result = run(pytester, tiny_model_dir, mmlu_csv_dir, f"--mmlu-report={report}", mode)
    assert "BREACH" not in result.stdout.str() and "MMLU summary" not in result.stdout.str()
    assert report.read_text() == "{}"


def test_merge_of_shards_without_mmlu_tests_is_no_verdict(pytester, tiny_model_dir, mmlu_csv_dir):
    pytester.makepyfile(test_gate=OUTCOMES)
    shards = [pytester.path / f"s{i}.json" for i in (1, 2)]
    for i, path in enumerate(shards, start=1):
        run(pytester, tiny_model_dir, mmlu_csv_dir, f"--mmlu-shard={i}/2", f"--mmlu-report={path}", "-k", "not_mmlu")
    out = merge(*shards)
    assert out.returncode == 2 and "the shards hold no MMLU test" in out.stderr


def test_the_report_s_model_entry_lists_every_variant_any_worker_loaded():
    from pytest_mmlu.reports.report import joined_model_info

    a = {"model": "m", "variant": "full", "variants": {"int8": {"variant": "int8"}}}
    b = {"model": "m", "variant": "full", "variants": {"adapter x": {"variant": "adapter x"}}}
    assert set(joined_model_info(a, b)["variants"]) == {"int8", "adapter x"}
    assert joined_model_info(None, b) == b and joined_model_info(a, None) == a


def test_dropping_the_session_s_merged_adapter_is_no_error(tmp_path):
    """--mmlu-adapter X --mmlu-merge-adapter, and a test with mmlu_variant(adapter=False)."""
    from pytest_mmlu.models.variants import Variant, make_variant

    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    session = Variant("none", str(adapter.resolve()), True)
    assert make_variant(session, adapter=False) == Variant("none", None, False)
    assert make_variant(session, quantization="int8") == Variant("int8", str(adapter.resolve()), True)
    with pytest.raises(ValueError, match="merge_adapter=True needs an adapter"):
        make_variant(session, adapter=False, merge_adapter=True)


LATE_MARKS = """
import pytest


@pytest.fixture
def release_bar(request):
    request.applymarker(pytest.mark.mmlu_accuracy_floor(0.99))


@pytest.mark.mmlu(subjects="anatomy", shots=0, limit=3)
def test_by_a_fixture(release_bar, mmlu_result):
    pass


@pytest.mark.mmlu(subjects="anatomy", shots=0, limit=3)
def test_in_the_body(request, mmlu_result):
    request.applymarker(pytest.mark.mmlu_memory_budget("1 TiB"))


def test_no_mmlu_at_collection(release_bar):
    pass


@pytest.mark.mmlu(subjects="anatomy", shots=0, limit=3)
def test_nothing_late(request, mmlu_result):
    request.applymarker(pytest.mark.slow)
"""


def test_a_late_mark_applied_while_the_test_runs_is_an_error_never_ignored(pytester, tiny_model_dir, mmlu_csv_dir):
    """Marks are read at collection: a floor applied by a fixture must not pass unjudged."""
    pytester.makepyfile(test_late=LATE_MARKS)
    result = run(pytester, tiny_model_dir, mmlu_csv_dir)
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines(["*@pytest.mark.mmlu_accuracy_floor applied while the test ran (request.applymarker)*"])
    result.stdout.fnmatch_lines(["*@pytest.mark.mmlu_memory_budget applied while the test ran*"])
