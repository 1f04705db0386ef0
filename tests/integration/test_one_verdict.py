"""One verdict on every path, proven by differential testing end to end (pytest and the CLI).

A matrix of gate scenarios, each gate kind passing and failing, runs on every path a verdict
can take: one plain run; pytest-xdist ``-n 2``; two CI shards and ``pytest-mmlu merge``; a
second run served from the result cache; a baseline from our report and from lm-eval samples
of the same (baseline) run; ``pytest-mmlu compare``. Every path must give every test the same
verdict: passed, failed or skipped, and which gates failed.

The release under test is the good answer-A model; the baselines were made by a run in
which the swapped adapter folder held a harmless fine-tune, which now holds a degraded one
(the candidate release's fine-tune got worse).
"""

from __future__ import annotations

import json
import shutil

import pytest
from factories import (
    compared_verdicts,
    make_baselines,
    run_cli,
    save_answer_a_model,
    save_head_adapter,
    verdicts_of,
    write_mmlu_csvs,
)

pytest.importorskip("peft", reason="needs the peft extra: pip install 'pytest-mmlu[peft]'")
pytestmark = pytest.mark.slow

SUBJECTS = ["anatomy", "virology", "marketing", "nutrition"]


def suite(world) -> str:
    spec = f"@pytest.mark.mmlu(subjects={SUBJECTS!r}, shots=1, limit=10)"
    adapter = lambda name: f"@pytest.mark.mmlu_variant(adapter={str(world[name])!r})"  # noqa: E731
    return f"""
import pytest

{spec}
@pytest.mark.mmlu_memory_budget("64 GiB")
def test_budget_pass(mmlu_result):
    pass

{spec}
@pytest.mark.mmlu_memory_budget("1 MiB")
def test_budget_fail(mmlu_result):
    pass

{spec}
@pytest.mark.mmlu_accuracy_floor(0.5)
def test_floor_pass(mmlu_result):
    pass

{spec}
@pytest.mark.mmlu_accuracy_floor(0.99)
def test_floor_fail(mmlu_result):
    pass

{spec}
@pytest.mark.mmlu_accuracy_floor(per_subject={{"anatomy": 0.5}})
def test_subject_floor_pass(mmlu_result):
    pass

{spec}
@pytest.mark.mmlu_accuracy_floor(per_subject={{"anatomy": 0.99}})
def test_subject_floor_fail(mmlu_result):
    pass

@pytest.mark.mmlu_accuracy_floor(0.99)
class TestLevels:
    {spec}
    @pytest.mark.mmlu_accuracy_floor(0.1)
    def test_class_floor_binds(self, mmlu_result):
        pass

{adapter("swap")}
{spec}
@pytest.mark.mmlu_no_regression(max_drop=1.0)
def test_nr_pass(mmlu_result):
    pass

{adapter("swap")}
{spec}
@pytest.mark.mmlu_no_regression(max_drop=0.02, alpha=0.05)
def test_nr_fail(mmlu_result):
    pass

{adapter("swap")}
@pytest.mark.mmlu(subjects="sociology", shots=1, limit=10)
@pytest.mark.mmlu_no_regression()
def test_nr_missing(mmlu_result):
    pass

{adapter("harmless")}
{spec}
@pytest.mark.mmlu_no_regression(against="full")
def test_full_pass(mmlu_result):
    pass

{adapter("degraded")}
{spec}
@pytest.mark.mmlu_no_regression(against="full")
def test_full_fail(mmlu_result):
    pass

{adapter("harmless")}
@pytest.mark.mmlu(subjects="anatomy", shots=1, limit=1)
@pytest.mark.mmlu_no_regression(against="full")
def test_full_one_question(mmlu_result):  # in two shards, one holds none of it
    pass

{adapter("nan")}
{spec}
def test_non_finite(mmlu_result):
    pass

@pytest.mark.mmlu_accuracy_floor(0.5)
def test_evaluated_in_body(mmlu):
    mmlu.evaluate(subjects={SUBJECTS!r}, shots=1, limit=10)

@pytest.mark.mmlu_accuracy_floor(0.5)
def test_never_evaluated(mmlu):
    raise RuntimeError("the test's own code fails before it evaluates")

@pytest.mark.mmlu_accuracy_floor(0.5)
def test_skipped(mmlu):
    pytest.skip("not this time")

{spec}
@pytest.mark.mmlu_accuracy_floor(0.99)
@pytest.mark.xfail(reason="a floor known to fail")
def test_xfail_floor(mmlu_result):
    pass
"""


# What every path must conclude: (status, failing gates).
EXPECTED = {
    "test_budget_pass": ("passed", ()),
    "test_budget_fail": ("failed", ("budget",)),
    "test_floor_pass": ("passed", ()),
    "test_floor_fail": ("failed", ("floor",)),
    "test_subject_floor_pass": ("passed", ()),
    "test_subject_floor_fail": ("failed", ("floor",)),
    "TestLevels::test_class_floor_binds": ("failed", ("floor",)),
    "test_nr_pass": ("passed", ()),
    "test_nr_fail": ("failed", ("regression",)),
    "test_nr_missing": ("failed", ("missing-baseline",)),
    "test_full_pass": ("passed", ()),
    "test_full_fail": ("failed", ("regression",)),
    "test_full_one_question": ("passed", ()),
    "test_non_finite": ("failed", ("non-finite",)),
    "test_evaluated_in_body": ("passed", ()),
    "test_never_evaluated": ("failed", ("never-evaluated",)),
    "test_skipped": ("skipped", ()),
    "test_xfail_floor": ("xfailed", ("floor",)),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("one-verdict")
    good = save_answer_a_model(root / "good", boost=8.0)
    world = {
        "root": root,
        "data": write_mmlu_csvs(root / "data", [*SUBJECTS, "sociology"], n_test=10, n_dev=5, seed=3, a_share=0.8),
        "good": good,
        "harmless": save_head_adapter(good, root / "harmless", bias_shift=0.0),
        "degraded": save_head_adapter(good, root / "degraded", bias_shift=-16.0),
        "nan": save_head_adapter(good, root / "nan", bias_shift=float("nan")),
        "swap": root / "swap",
    }
    save_answer_a_model(root / "good-2", boost=6.0, seed=1)  # another release of the same model
    return world


def test_every_gate_gives_the_same_verdict_on_every_path(pytester, world):
    def pytest_run(*extra, subprocess_run=False):
        args = (f"--mmlu-model={world['good']}", f"--mmlu-data={world['data']}", "-p", "no:cacheprovider", *extra)
        return (pytester.runpytest_subprocess if subprocess_run else pytester.runpytest_inprocess)(*args)

    path = pytester.path
    pytester.makepyfile(test_gate=suite(world))
    # The last release: its fine-tune was the harmless one.
    shutil.copytree(world["harmless"], world["swap"])
    baseline, lm_eval = make_baselines(pytest_run, path)
    # The candidate: the same fine-tune folder, a degraded fine-tune in it.
    shutil.rmtree(world["swap"])
    shutil.copytree(world["degraded"], world["swap"])

    paths: dict[str, dict[str, tuple]] = {}
    exits: dict[str, int] = {}
    result = pytest_run("--mmlu-no-cache", f"--mmlu-baseline={baseline}", f"--mmlu-report={path / 'plain.json'}")
    paths["plain"], exits["plain"] = verdicts_of(path / "plain.json"), result.ret

    result = pytest_run(
        "--mmlu-no-cache",
        f"--mmlu-baseline={baseline}",
        f"--mmlu-report={path / 'xdist.json'}",
        "-n",
        "2",
        subprocess_run=True,
    )
    paths["xdist -n 2"], exits["xdist -n 2"] = verdicts_of(path / "xdist.json"), result.ret

    for i in (1, 2):
        pytest_run("--mmlu-no-cache", "--mmlu-shard", f"{i}/2", f"--mmlu-report={path / f'shard-{i}.json'}")
    merged = run_cli(
        "merge", path / "shard-1.json", path / "shard-2.json", "--baseline", baseline, "-o", path / "merged.json"
    )
    paths["2 shards + merge"], exits["2 shards + merge"] = verdicts_of(path / "merged.json"), merged.returncode

    cache = [f"--mmlu-cache-dir={path / 'cache'}", f"--mmlu-baseline={baseline}"]
    pytest_run(*cache, f"--mmlu-report={path / 'first.json'}")
    result = pytest_run(*cache, f"--mmlu-report={path / 'cached.json'}")
    cached = json.loads((path / "cached.json").read_text())
    assert sum(e.get("from_cache", False) for t in cached["tests"] for e in t["evaluations"]) >= 10
    paths["from the cache"], exits["from the cache"] = verdicts_of(path / "cached.json"), result.ret

    (results_file,) = lm_eval.rglob("results_*.json")  # one run: the baseline run's fine-tune
    result = pytest_run("--mmlu-no-cache", f"--mmlu-baseline={lm_eval}", f"--mmlu-report={path / 'lm-eval.json'}")
    paths["lm-eval samples baseline"], exits["lm-eval samples baseline"] = (
        verdicts_of(path / "lm-eval.json"),
        result.ret,
    )

    pytest_run("--mmlu-no-cache", f"--mmlu-report={path / 'unjudged.json'}")  # no baseline given to the run
    compared = run_cli("compare", baseline, path / "unjudged.json")
    paths["compare"], exits["compare"] = compared_verdicts(compared.stdout), compared.returncode

    for name, verdicts in paths.items():
        assert verdicts == EXPECTED, (
            name,
            {k: (v, EXPECTED.get(k)) for k, v in verdicts.items() if EXPECTED.get(k) != v},
        )
    assert set(exits.values()) == {1}, exits  # some gates fail: no path exits 0, none refuses (2)


# -- the confusion matrix: each field of the identity, changed alone -----------------------------
IDENTITY_SUITE = """
import pytest

@pytest.mark.mmlu(subjects=["anatomy", "virology"], shots={shots}, limit={limit})
@pytest.mark.mmlu_no_regression(max_drop=1.0)
def test_gate(mmlu_result):
    pass
"""


def other_copy(data, root):
    """The data with one test question of anatomy reworded: another MMLU copy."""
    copy = shutil.copytree(data, root)
    path = copy / "test" / "anatomy_test.csv"
    path.write_text(path.read_text().replace("?", " (reworded)?", 1))
    return copy


# field -> (how the run changes, is it the same evaluation for a baseline and compare?)
CHANGES = {
    "model": ("weights", True),  # another release of the model: what a baseline is for
    "quantization": (["--mmlu-quantization=int8"], False),
    "adapter": ("adapter", True),  # another fine-tune in the same folder: its presence counts
    "adapter_name": ("adapter_name", False),  # another fine-tune beside it: not the baseline's
    "merge_adapter": (["--mmlu-merge-adapter"], False),
    "dtype": (["--mmlu-dtype=bfloat16"], False),
    "prompt": (["--mmlu-system-instruction=Be brief."], False),
    "data": ("data", False),
    "questions": ({"limit": 5}, False),
    "shots": ({"shots": 2}, False),
    "scoring": ("scoring", True),
    "software": ("software", True),
}


def test_an_evaluation_that_differs_in_one_field_is_never_served_compared_or_merged_as_the_old(
    pytester, world, tmp_path, monkeypatch
):
    """For each field of the identity, a run that changes only that field is a cache miss, is
    refused by the merge, and is refused as the baseline's entry (and by compare) where the
    field makes it another evaluation for a baseline (README: what counts as the same
    evaluation). The device kind cannot change on a machine without a GPU: it is proven on
    identities in test_identity.py."""
    from pytest_mmlu import software
    from pytest_mmlu.identity import BASELINE, CACHE, MERGE

    # "task" is None for every MMLU evaluation: an lm-eval task's fields, changed alone, are
    # test_task_gates.py's own confusion test
    assert set(CHANGES) | {"device", "task"} == set(CACHE.fields) == set(MERGE.fields) | {"questions"}
    model, adapter = tmp_path / "model", tmp_path / "adapter"
    shutil.copytree(world["good"], model)
    shutil.copytree(world["harmless"], adapter)
    other_data = other_copy(world["data"], tmp_path / "other-data")
    cache, baseline = tmp_path / "cache", tmp_path / "baseline.json"

    def run(*extra, shots=1, limit=6, data=world["data"]):
        pytester.makepyfile(test_gate=IDENTITY_SUITE.format(shots=shots, limit=limit))
        return pytester.runpytest_inprocess(
            f"--mmlu-model={model}",
            f"--mmlu-data={data}",
            f"--mmlu-adapter={adapter}",
            "-p",
            "no:cacheprovider",
            f"--mmlu-cache-dir={cache}",
            *extra,
        )

    def entry(report):
        return json.loads(report.read_text())["tests"][0]["evaluations"][0]

    run(
        f"--mmlu-baseline={baseline}", "--mmlu-update-baseline", f"--mmlu-report={tmp_path / 'r0.json'}"
    ).assert_outcomes(passed=1)
    assert entry(tmp_path / "r0.json")["identity"]["adapter"] is not None
    run("--mmlu-shard=1/2", f"--mmlu-report={tmp_path / 's1.json'}").assert_outcomes(passed=1)
    assert entry(tmp_path / "s1.json")["from_cache"] is False
    run("--mmlu-shard=1/2", f"--mmlu-report={tmp_path / 's1.json'}").assert_outcomes(passed=1)
    assert entry(tmp_path / "s1.json")["from_cache"] is True  # nothing changed: served

    for field, (change, same_for_baseline) in CHANGES.items():
        kwargs, args = {}, []
        with monkeypatch.context() as patch:
            if change == "weights":
                shutil.copy(world["root"] / "good-2" / "model.safetensors", model / "model.safetensors")
            elif change == "adapter":
                shutil.copy(world["degraded"] / "adapter_model.safetensors", adapter / "adapter_model.safetensors")
            elif change == "adapter_name":
                args = [f"--mmlu-adapter={shutil.copytree(adapter, tmp_path / 'other-fine-tune')}"]
            elif change == "data":
                kwargs["data"] = other_data
            elif change == "scoring":
                patch.setattr("pytest_mmlu.session.SCORING_VERSION", 999)
            elif change == "software":
                real = software._package_version
                patch.setattr(
                    software,
                    "_package_version",
                    lambda name, real=real: "9.9.9" if name == "tokenizers" else real(name),
                )
            elif isinstance(change, dict):
                kwargs.update(change)
            else:
                args = change
            report, shard = tmp_path / f"{field}.json", tmp_path / f"{field}-s2.json"
            result = run(*args, f"--mmlu-baseline={baseline}", f"--mmlu-report={report}", **kwargs)
            ev = entry(report)
            assert ev["from_cache"] is False, f"{field}: served from the cache as the old evaluation"
            assert ev["identity"][field] != entry(tmp_path / "r0.json")["identity"][field], field
            verdict = ev["regression"]["verdict"]
            assert (verdict != "missing") == same_for_baseline, (field, ev["regression"]["line"])
            assert result.ret == (0 if same_for_baseline else 1), field
            compared = run_cli("compare", baseline, report)
            assert compared.returncode == (0 if same_for_baseline else 1), (field, compared.stdout)
            run(*args, "--mmlu-shard=2/2", f"--mmlu-report={shard}", **kwargs)
            merged = run_cli("merge", tmp_path / "s1.json", shard)
            assert merged.returncode == 2 and "pytest-mmlu merge: " in merged.stderr, (field, merged.stdout)
        # Undo the change for the next field.
        shutil.copy(world["good"] / "model.safetensors", model / "model.safetensors")
        shutil.copy(world["harmless"] / "adapter_model.safetensors", adapter / "adapter_model.safetensors")
    # The table above is the baseline lookup's: its fields refuse, but an adapter's content.
    assert {f for f, (_, same) in CHANGES.items() if not same} | {"task"} == set(BASELINE.fields - BASELINE.presence)
