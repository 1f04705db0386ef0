"""The plugin as users meet it: whole pytest runs through pytester."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from factories import import_graph

GATE_SUITE = """
import pytest

@pytest.mark.mmlu(subjects=["anatomy", "virology"], shots=5, limit=4)
@pytest.mark.mmlu_memory_budget("4 GiB")
@pytest.mark.mmlu_accuracy_floor(0.0)
def test_passes(mmlu_result):
    assert mmlu_result.n == 8
    assert len(mmlu_result.questions[0].loglikelihoods) == 4

@pytest.mark.mmlu(subjects="anatomy", shots=0, limit=5)
@pytest.mark.mmlu_accuracy_floor(0.99)
def test_floor_missed(mmlu_result):
    pass

@pytest.mark.mmlu(subjects="virology", shots=2, limit=3)
@pytest.mark.mmlu_accuracy_floor(per_subject={"virology": 0.99})
def test_subject_floor_missed(mmlu_result):
    pass

@pytest.mark.mmlu_memory_budget("50 MiB")
def test_budget_too_small(mmlu):
    mmlu.evaluate("anatomy", shots=0, limit=2)

def test_fixture_style(mmlu, mmlu_model):
    r = mmlu.evaluate(subjects="stem", shots=1, limit=1)
    assert r.n == 19 and set(r.per_category) == {"stem"}
    assert mmlu_model.weight_bytes > 0

def test_not_mmlu():
    pass
"""


@pytest.fixture
def gate(pytester, tiny_model_dir, mmlu_csv_dir):
    pytester.makepyfile(test_gate=GATE_SUITE)
    return ["--mmlu-model", str(tiny_model_dir), "--mmlu-data", str(mmlu_csv_dir), "-p", "no:cacheprovider"]


def test_gate_fails_exactly_the_breaching_tests(pytester, gate):
    report = pytester.path / "out" / "report.json"
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest_inprocess(*gate, "--mmlu-report", str(report), "--junitxml", str(junit))
    result.assert_outcomes(passed=3, failed=3)
    result.stdout.fnmatch_lines(
        [
            "mmlu: model *tiny-llama*, dtype float32, device cpu",
            "*test_floor_missed*",
            "MMLU accuracy 0.* < floor 0.990 (n=5, 95% CI 0.*-0.*; 0-shot, anatomy)",
            "*test_subject_floor_missed*",
            "MMLU accuracy 0.* < floor 0.990 (n=3, 95% CI *; 2-shot, virology)",
            "*MMLU memory budget 0.05 GiB is too small on cpu: batch 1 needs about * GiB*minimum that would work is * GiB",
            "*MMLU summary*",
            "  subjects * shots * n * acc * 95% CI * floor * peak/budget * batch * s * verdict",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    data = json.loads(report.read_text())
    assert data["schema"] == 1 and data["model"]["dtype"] == "float32"
    tests = {t["nodeid"].split("::")[1]: t for t in data["tests"]}
    assert tests["test_passes"]["outcome"] == "passed"
    assert tests["test_floor_missed"]["outcome"] == "failed"
    ev = tests["test_passes"]["evaluations"][0]
    assert ev["n"] == 8 and ev["shots"] == 5 and ev["limit"] == 4 and ev["budget_bytes"] == 4 * 2**30
    assert 0 < ev["peak_memory_bytes"] <= ev["budget_bytes"]
    q = ev["questions"][0]
    assert set(q) == {"subject", "index", "target", "prediction", "loglikelihoods", "is_greedy"}
    assert len(q["is_greedy"]) == 4 and all(isinstance(g, bool) for g in q["is_greedy"])
    assert q["index"] == 0 and q["prediction"] == max(range(4), key=lambda i: q["loglikelihoods"][i])
    props = {p.get("name") for p in ET.parse(junit).iter("property")}
    assert {"mmlu_accuracy", "mmlu_peak_memory_bytes", "mmlu_batch_size", "mmlu_ci95_low"} <= props


def test_without_a_model_mmlu_tests_skip_and_say_how(pytester):
    pytester.makepyfile(GATE_SUITE)
    result = pytester.runpytest_inprocess("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=5)
    result.stdout.fnmatch_lines(["*MMLU test needs a model: pass --mmlu-model=ORG/NAME*PYTEST_MMLU_MODEL*"])


@pytest.mark.parametrize("how", [["--co"], [], ["-n", "2"]], ids=["collect", "run", "xdist"])
def test_a_project_without_mmlu_tests_imports_nothing_heavy(pytester, how):
    """The plugin loads in every pytest run of the environment: none of the libraries
    scripts/import_graph.py calls heavy may come in with it, collecting or running."""
    heavy = sorted(import_graph().HEAVY)
    pytester.makeconftest(f"""
import sys
def pytest_sessionfinish(session):
    print("HEAVY MODULES:", sorted(m for m in {heavy!r} if m in sys.modules) or "none")
""")
    pytester.makepyfile("def test_a():\n    pass\n")
    result = pytester.runpytest_subprocess(*how, "-s", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*HEAVY MODULES: none"])


def test_xdist_workers_ship_every_evaluation(pytester, gate):
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(*gate, "-n", "2", "--mmlu-report", str(report))
    result.assert_outcomes(passed=3, failed=3)
    data = json.loads(report.read_text())
    names = sorted(t["nodeid"].split("::")[1] for t in data["tests"])
    assert names == [
        "test_budget_too_small",
        "test_fixture_style",
        "test_floor_missed",
        "test_passes",
        "test_subject_floor_missed",
    ]
    assert data["model"] is not None
    result.stdout.fnmatch_lines(["*MMLU summary*"])


@pytest.mark.parametrize("where", ["cli", "env", "ini"])
def test_bad_setting_names_value_and_source(pytester, where, monkeypatch):
    pytester.makepyfile("def test_a():\n    pass\n")
    args = []
    if where == "cli":
        args = ["--mmlu-dtype", "fp8"]
    elif where == "env":
        monkeypatch.setenv("PYTEST_MMLU_DTYPE", "fp8")
    else:
        pytester.makeini("[pytest]\nmmlu_dtype = fp8\n")
    result = pytester.runpytest_inprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    source = {
        "cli": "command line --mmlu-dtype",
        "env": "environment variable PYTEST_MMLU_DTYPE",
        "ini": "ini key mmlu_dtype in *tox.ini",
    }[where]
    result.stderr.fnmatch_lines(
        [f"*pytest-mmlu: bad value 'fp8' from {source}: expected one of auto, float32, bfloat16, float16"]
    )


def test_settings_precedence_cli_env_ini_default(pytester, monkeypatch):
    from pytest_mmlu.settings import resolve

    pytester.makeini("[pytest]\nmmlu_device = cuda:1\nmmlu_dtype = float16\nmmlu_batch_size = 4\n")
    monkeypatch.setenv("PYTEST_MMLU_DTYPE", "bfloat16")
    monkeypatch.setenv("PYTEST_MMLU_BATCH_SIZE", "8")
    config = pytester.parseconfig("--mmlu-batch-size", "2")
    s = resolve(config)
    assert (s.batch_size, s.dtype, s.device, s.data) == (2, "bfloat16", "cuda:1", "cais/mmlu")
    assert s.source_of("batch_size") == "command line --mmlu-batch-size"
    assert s.source_of("dtype") == "environment variable PYTEST_MMLU_DTYPE"
    assert s.source_of("data") == "default"
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        s.dtype = "float32"


def test_missing_model_folder_is_a_usage_error(pytester, tmp_path):
    pytester.makepyfile("def test_a():\n    pass\n")
    result = pytester.runpytest_inprocess("--mmlu-model", str(tmp_path / "nope"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*bad value * from command line --mmlu-model: model folder * does not exist"])


def test_hub_model_without_network_is_one_line_error(pytester, mmlu_csv_dir, monkeypatch):
    # huggingface_hub reads HF_HUB_OFFLINE once, at import: set its constant too.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    pytester.makepyfile(GATE_SUITE)
    result = pytester.runpytest_inprocess(
        "--mmlu-model",
        "nobody/no-such-model",
        "--mmlu-data",
        str(mmlu_csv_dir),
        "-p",
        "no:cacheprovider",
        "-k",
        "passes",
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*pytest-mmlu: cannot load model 'nobody/no-such-model' from the Hugging Face hub: *; with no network, pass --mmlu-model=/path/to/a/local/folder"
        ]
    )
    assert "Traceback" not in result.stdout.str()


@pytest.mark.parametrize(
    "mark,message",
    [
        ('mmlu(subjects="anatomyy")', "unknown MMLU subject 'anatomyy' (did you mean 'anatomy'?)*"),
        ('mmlu(subjects="anatomy", shot=5)', "got an unexpected keyword argument 'shot'"),
        ('mmlu(subjects="anatomy", shots=7)', "shots must be an int from 0 to 5*"),
        ('mmlu_memory_budget("6 GiBs")', "invalid size '6 GiBs'*"),
        ("mmlu_accuracy_floor(1.5)", "min must be a number in [[]0, 1[]], got 1.5"),
        ('mmlu_accuracy_floor(per_subject={"stem": 0.3})', "per_subject keys must be single subjects, got 'stem'"),
        ('lm_eval_task("arc_easy", shots=-1)', "shots must be a non-negative int or None*"),
        ('lm_eval_task("arc_easy", limit=1.5)', "limit must be a positive int, a float in (0, 1)*"),
        ("lm_eval_task(3)", "name must be an lm-eval task or group name, got 3"),
    ],
)
def test_bad_marker_arguments_fail_at_collection(pytester, mark, message):
    pytester.makepyfile(f"import pytest\n@pytest.mark.{mark}\ndef test_x(mmlu_result):\n    pass\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*pytest-mmlu: test_bad_marker_arguments_fail_at_collection.py::test_x: @pytest.mark.*: {message}"]
    )


def test_an_mmlu_and_a_task_evaluation_on_one_test_fail_at_collection(pytester):
    pytester.makepyfile(
        "import pytest\n"
        "pytestmark = pytest.mark.lm_eval_task('arc_easy')\n"
        "@pytest.mark.mmlu(subjects='anatomy')\n"
        "def test_x(mmlu_result):\n    pass\n"
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*test_x: an MMLU and an lm-eval task evaluation are both declared (@pytest.mark.mmlu(*) on the "
            "function; @pytest.mark.lm_eval_task('arc_easy') in module *): a test declares one evaluation*"
        ]
    )


def test_malformed_data_is_a_test_error_naming_file_and_line(pytester, tiny_model_dir, mmlu_csv_dir, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(mmlu_csv_dir, root)
    (root / "test" / "anatomy_test.csv").write_text('"q","a","b"\n')
    pytester.makepyfile(GATE_SUITE)
    report = pytester.path / "r.json"
    result = pytester.runpytest_inprocess(
        "--mmlu-model",
        str(tiny_model_dir),
        "--mmlu-data",
        str(root),
        "-p",
        "no:cacheprovider",
        "-k",
        "passes",
        "--mmlu-report",
        str(report),
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*MMLU data error: *anatomy_test.csv:1: expected 6 columns (question,A,B,C,D,answer), found 3"]
    )
    # The errored test still has its row (n=0, the error as its breach): no silent gap in the report.
    (test,) = json.loads(report.read_text())["tests"]
    assert test["outcome"] == "error" and test["evaluations"][0]["n"] == 0


def test_gates_without_an_evaluation_fail(pytester, tiny_model_dir, mmlu_csv_dir):
    pytester.makepyfile("import pytest\n@pytest.mark.mmlu_accuracy_floor(0.5)\ndef test_x(mmlu_model):\n    pass\n")
    result = pytester.runpytest_inprocess(
        "--mmlu-model", str(tiny_model_dir), "--mmlu-data", str(mmlu_csv_dir), "-p", "no:cacheprovider"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*declares MMLU gates but made no evaluation*"])


def test_markers_are_documented(pytester):
    result = pytester.runpytest_inprocess("--markers")
    result.stdout.fnmatch_lines(
        [
            "@pytest.mark.mmlu(subjects, shots=5, limit=None)*",
            "@pytest.mark.mmlu_memory_budget(size)*",
            "@pytest.mark.mmlu_accuracy_floor(min=None, per_subject=None)*",
            "@pytest.mark.mmlu_no_regression(max_drop=0.02, alpha=0.05, against='baseline')*",
            "@pytest.mark.mmlu_variant(quantization=None, adapter=None, merge_adapter=None)*",
        ]
    )
    help_text = pytester.runpytest_inprocess("--help").stdout.str()
    for flag in (
        "--mmlu-model",
        "--mmlu-revision",
        "--mmlu-data",
        "--mmlu-dtype",
        "--mmlu-device",
        "--mmlu-report",
        "--mmlu-trust-remote-code",
        "--mmlu-quantization",
        "--mmlu-adapter",
        "--mmlu-merge-adapter",
        "--mmlu-device-map",
    ):
        assert flag in help_text


NAN_CONFTEST = '''
import dataclasses
import math
import pytest
from pytest_mmlu.mmlu.evaluation import Evaluator

@pytest.fixture(autouse=True)
def _nan_scores(monkeypatch):
    """The engine as it will hand over NaN scores (fp16 overflow): questions 0, 2, 3 of each evaluation."""
    real = Evaluator.evaluate

    def evaluate(self, spec, *args, **kwargs):
        result = real(self, spec, *args, **kwargs)
        result.questions = [dataclasses.replace(q, loglikelihoods=(math.nan, *q.loglikelihoods[1:]))
                            if i in (0, 2, 3) else q for i, q in enumerate(result.questions)]
        return result

    monkeypatch.setattr(Evaluator, "evaluate", evaluate)
'''
NAN_SUITE = """
import pytest

@pytest.mark.mmlu(subjects="anatomy", shots=0, limit=5)
@pytest.mark.mmlu_accuracy_floor(0.0)
def test_marker(mmlu_result):
    pass

def test_fixture(mmlu):
    mmlu.evaluate("virology", shots=0, limit=4)
"""


def test_non_finite_scores_fail_the_test_and_are_never_cached(pytester, tiny_model_dir, mmlu_csv_dir, tmp_path):
    pytester.makeconftest(NAN_CONFTEST)
    pytester.makepyfile(test_nan=NAN_SUITE)
    cache, report = tmp_path / "cache", pytester.path / "r.json"
    for _ in range(2):  # the second run must evaluate again: nothing was cached
        result = pytester.runpytest_inprocess(
            "--mmlu-model",
            str(tiny_model_dir),
            "--mmlu-data",
            str(mmlu_csv_dir),
            "-p",
            "no:cacheprovider",
            "--mmlu-cache-dir",
            str(cache),
            "--mmlu-report",
            str(report),
        )
        result.assert_outcomes(errors=1, failed=1)  # the marker errors in setup, mmlu.evaluate fails
        result.stdout.fnmatch_lines(
            [
                "MMLU scores are not finite (NaN) for 3 of 5 questions: anatomy#0, anatomy#2, anatomy#3 "
                "(dtype float32, device cpu)",
                "MMLU scores are not finite (NaN) for 3 of 4 questions: virology#0, virology#2, virology#3 "
                "(dtype float32, device cpu)",
            ]
        )
        tests = {t["nodeid"].split("::")[1]: t for t in json.loads(report.read_text())["tests"]}
        (ev,) = tests["test_marker"]["evaluations"]
        assert not ev["from_cache"] and ev["breaches"][0].startswith("MMLU scores are not finite (NaN) for 3 of 5")
        assert [p.name for p in cache.glob("*.json")] == ["content-hashes.json"]


NOTE_CONFTEST = """
from pytest_mmlu import session
from pytest_mmlu.models import content

real = content.model_content

def model_content(model, revision, hashes):
    # As for a hub model with the hub unreachable: keyed by the local snapshot, and said so.
    return content.ModelContent(real(model, revision, hashes).key,
                                "pytest-mmlu: hub unreachable (test); keyed by the local snapshot")

session.model_content = model_content  # where the session asks; a subprocess run: nothing to restore
"""


def test_xdist_workers_ship_their_notes(pytester, tiny_model_dir, mmlu_csv_dir, tmp_path):
    pytester.makeconftest(NOTE_CONFTEST)
    pytester.makepyfile(
        "import pytest\n"
        + "".join(
            f'@pytest.mark.mmlu(subjects="anatomy", shots=0, limit={n})\ndef test_{n}(mmlu_result):\n    pass\n'
            for n in (1, 2, 3, 4)
        )
    )
    result = pytester.runpytest_subprocess(
        "--mmlu-model",
        str(tiny_model_dir),
        "--mmlu-data",
        str(mmlu_csv_dir),
        "-p",
        "no:cacheprovider",
        "--mmlu-cache-dir",
        str(tmp_path / "cache"),
        "-n",
        "2",
    )
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*MMLU summary*", "pytest-mmlu: hub unreachable (test); keyed by the local snapshot"])
    assert result.stdout.str().count("hub unreachable (test)") == 1  # said once, however many workers said it
