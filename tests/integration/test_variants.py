"""Variants in one session, through whole pytest runs: the release and its int8 build or its
fine-tune, each model loaded once and released before the next, and the variant gated against
the full-precision model on the same questions (paired McNemar), no stored baseline needed."""

from __future__ import annotations

import json

import pytest
from factories import save_answer_a_model, save_head_adapter, write_mmlu_csvs

from pytest_mmlu import session as session_module  # where the session loads each variant

pytest.importorskip("torchao", reason="needs the quant extra: pip install 'pytest-mmlu[quant]'")
peft = pytest.importorskip("peft", reason="needs the peft extra: pip install 'pytest-mmlu[peft]'")
SUBJECTS = ["anatomy", "virology", "marketing", "nutrition", "sociology", "philosophy"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("variants")
    good = save_answer_a_model(root / "good", boost=8.0)
    return {
        # 80% of answers are A: the good model (always A) scores ~0.8, the degraded fine-tune ~chance.
        "data": write_mmlu_csvs(root / "data", SUBJECTS, n_test=10, n_dev=5, seed=3, a_share=0.8),
        "good": good,
        "degraded": save_head_adapter(good, root / "degraded", bias_shift=-16.0),
        "harmless": save_head_adapter(good, root / "harmless", bias_shift=0.0),
    }


@pytest.fixture
def loads(monkeypatch):
    """Every model load of the run, as the variant's label."""
    seen: list[str] = []
    real = session_module.load_model

    def counting(settings, variant=None, load_plan=None):
        loaded = real(settings, variant, load_plan)
        seen.append(loaded.variant.label)
        return loaded

    monkeypatch.setattr(session_module, "load_model", counting)
    return seen


def run(pytester, world, *extra):
    # "--opt=PATH": a PATH of its own would count for pytest's rootdir, and the ini be missed
    return pytester.runpytest_inprocess(
        f"--mmlu-model={world['good']}",
        f"--mmlu-data={world['data']}",
        "-p",
        "no:cacheprovider",
        "--mmlu-no-cache",
        *extra,
    )


SPEC = f"@pytest.mark.mmlu(subjects={SUBJECTS!r}, shots=2, limit=10)"


def test_release_and_int8_build_in_one_session_each_loaded_once(pytester, world, loads):
    pytester.makepyfile(
        test_gate=f"""
import pytest

@pytest.mark.mmlu_variant(quantization="int8")
@pytest.mark.mmlu_memory_budget("4 GiB")
@pytest.mark.mmlu_no_regression(against="full")
{SPEC}
def test_int8(mmlu_result):
    assert mmlu_result.variant == "int8"

{SPEC}
def test_release(mmlu_result):
    assert mmlu_result.variant == "full"

@pytest.mark.mmlu_variant(quantization="int8")
def test_int8_from_the_body(mmlu):
    assert mmlu.evaluate(subjects="anatomy", shots=0, limit=5).variant == "int8"
    assert mmlu.evaluate(subjects="anatomy", shots=0, limit=5, quantization="none").variant == "full"
"""
    )
    report = pytester.path / "report.json"
    result = run(pytester, world, "--mmlu-report", str(report), "-v")
    result.assert_outcomes(passed=3)
    # The release first, then the int8 tests; the body's own switch back to full loads once more.
    result.stdout.fnmatch_lines(["*test_release PASSED*", "*test_int8 PASSED*", "*test_int8_from_the_body PASSED*"])
    assert loads == ["full", "int8", "full"]
    data = json.loads(report.read_text())
    assert data["model"]["variant"] == "full"
    int8 = data["model"]["variants"]["int8"]
    assert int8["quantization"]["description"] == "int8 (torchao Int8WeightOnlyConfig)"
    assert int8["weight_bytes"] < data["model"]["weight_bytes"]
    reference, entry = next(t for t in data["tests"] if t["nodeid"].endswith("test_int8"))["evaluations"]
    assert reference["role"] == "reference" and reference["variant"] == "full"  # what it was compared with
    assert entry["variant"] == "int8" and entry["regression"]["against"] == "full"
    assert entry["regression"]["verdict"] == "unchanged" and entry["regression"]["n"] == 60
    assert entry["regression"]["same_prediction"] == 60


def test_a_degraded_fine_tune_fails_against_full_precision(pytester, world, loads):
    pytester.makepyfile(
        test_gate=f"""
import pytest

@pytest.mark.mmlu_variant(adapter={str(world["degraded"])!r})
@pytest.mark.mmlu_no_regression(against="full")
{SPEC}
def test_fine_tune(mmlu_result):
    pass

@pytest.mark.mmlu_variant(adapter={str(world["harmless"])!r})
@pytest.mark.mmlu_no_regression(against="full")
{SPEC}
def test_harmless_fine_tune(mmlu_result):
    pass
"""
    )
    result = run(pytester, world)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*MMLU regression of adapter degraded vs full precision: 0.8* -> 0.* (n=60; "
            "* lost, * gained; same answer on */60; McNemar p=0.0* < 0.05)"
        ]
    )
    # The full model was evaluated once (for the first test) and its result reused by the second.
    assert loads == ["full", "adapter degraded", "adapter harmless"]


def test_against_full_on_the_full_model_itself_is_an_error(pytester, world):
    pytester.makepyfile(
        test_gate=f"""
import pytest

@pytest.mark.mmlu_no_regression(against="full")
{SPEC}
def test_release(mmlu_result):
    pass
"""
    )
    result = run(pytester, world)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*mmlu_no_regression(against='full') compares a variant with the full-precision "
            "model, and this test evaluates the full model itself*"
        ]
    )


def test_session_options_name_the_variant(pytester, world, monkeypatch):
    pytester.makepyfile(
        test_gate=f"""
import pytest

{SPEC}
def test_release(mmlu_result, request):
    assert mmlu_result.variant == request.config.getoption("expected")
"""
    )
    pytester.makeconftest("def pytest_addoption(parser):\n    parser.addoption('--expected')\n")
    pytester.makeini(f"[pytest]\nmmlu_adapter = {world['harmless']}\n")
    result = run(pytester, world, "--mmlu-merge-adapter", "--expected", "adapter harmless (merged)")
    result.assert_outcomes(passed=1)
    monkeypatch.setenv("PYTEST_MMLU_QUANTIZATION", "int8")
    result = run(pytester, world, "--mmlu-merge-adapter", "--expected", "int8 + adapter harmless (merged)")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["mmlu: quantization int8 (--mmlu-quantization)", f"mmlu: adapter {world['harmless']}, merged"]
    )


def test_bad_variant_values_are_usage_errors_naming_their_source(pytester, world, tmp_path, monkeypatch):
    pytester.makepyfile(
        test_gate=f"""
import pytest

@pytest.mark.mmlu_variant(quantization="int3")
{SPEC}
def test_x(mmlu_result):
    pass
"""
    )
    result = run(pytester, world)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*test_gate.py::test_x: @pytest.mark.mmlu_variant(quantization='int3'): "
            "quantization must be one of none, int8, int4, fp8, nf4, bnb-int8, got 'int3'"
        ]
    )
    pytester.makepyfile(test_gate="def test_x():\n    pass\n")
    monkeypatch.setenv("PYTEST_MMLU_ADAPTER", str(tmp_path / "nowhere"))
    result = run(pytester, world)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*bad value * from environment variable PYTEST_MMLU_ADAPTER: adapter folder *nowhere* does not exist"]
    )


def test_the_adapters_files_are_in_the_cache_key(pytester, world, tmp_path):
    import shutil

    adapter = shutil.copytree(world["harmless"], tmp_path / "adapter")
    pytester.makepyfile(
        test_gate="""
import pytest

@pytest.mark.mmlu(subjects="anatomy", shots=0, limit=5)
def test_x(mmlu_result):
    print("FROM_CACHE", mmlu_result.from_cache)
"""
    )
    common = (
        f"--mmlu-model={world['good']}",
        f"--mmlu-data={world['data']}",
        "-p",
        "no:cacheprovider",
        f"--mmlu-cache-dir={tmp_path / 'cache'}",
        f"--mmlu-adapter={adapter}",
        "-s",
    )
    report = tmp_path / "report.json"
    pytester.runpytest_inprocess(*common, f"--mmlu-report={report}").stdout.fnmatch_lines(["*FROM_CACHE False*"])
    first = json.loads(report.read_text())["model"]["adapter"]["sha256"]
    pytester.runpytest_inprocess(*common).stdout.fnmatch_lines(["*FROM_CACHE True*"])
    # Another fine-tune's weights in the same folder: same path, same config, other files.
    shutil.copy(world["degraded"] / "adapter_model.safetensors", adapter / "adapter_model.safetensors")
    pytester.runpytest_inprocess(*common, f"--mmlu-report={report}").stdout.fnmatch_lines(["*FROM_CACHE False*"])
    assert json.loads(report.read_text())["model"]["adapter"]["sha256"] != first  # the report tells them apart


def test_the_model_fixture_gives_the_tests_variant_and_keeps_no_model_alive(pytester, world, loads):
    """A session-scoped mmlu_model kept the full model referenced after the int8 test's switch:
    two models resident while the int8 build's budget was judged."""
    pytester.makepyfile(
        test_gate="""
import gc, weakref
import pytest

FULL = []

def test_full(mmlu_model):
    FULL.append(weakref.ref(mmlu_model.model))
    assert mmlu_model.variant.label == "full"

@pytest.mark.mmlu_variant(quantization="int8")
def test_int8(mmlu_model, mmlu):
    gc.collect()
    assert FULL[0]() is None, "the full model is still alive after the switch to int8"
    assert mmlu_model.variant.quantization == "int8"
    assert mmlu.evaluate(subjects="anatomy", shots=0, limit=2).n == 2
"""
    )
    result = run(pytester, world)
    result.assert_outcomes(passed=2)
    assert loads == ["full", "int8"]
