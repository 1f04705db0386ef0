"""CI shards: --mmlu-shard I/N splits every evaluation's questions; `pytest-mmlu merge` joins the
shard reports and judges the whole exactly as one unsharded run would."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from factories import save_answer_a_model, write_mmlu_csvs

from pytest_mmlu.mmlu.shards import Shard, ShardedData, parse_shard, shard_of

SUBJECTS = ["anatomy", "virology", "marketing", "nutrition", "sociology", "philosophy"]
SUITE = """
import pytest

@pytest.mark.mmlu(subjects=["anatomy", "virology", "marketing", "nutrition", "sociology", "philosophy"],
                  shots=2, limit=10)
@pytest.mark.mmlu_no_regression(max_drop=0.02, alpha=0.05)
def test_no_regression(mmlu_result):
    pass

@pytest.mark.mmlu(subjects=["anatomy", "virology"], shots=1, limit=10)
@pytest.mark.mmlu_accuracy_floor(0.99, per_subject={"virology": 0.2})
@pytest.mark.mmlu_memory_budget("8 GiB")
def test_floor_missed_on_the_whole(mmlu_result):
    pass

@pytest.mark.mmlu(subjects="marketing", shots=0, limit=10)
@pytest.mark.mmlu_accuracy_floor(0.0)
def test_floor_met(mmlu_result):
    pass

@pytest.mark.mmlu_accuracy_floor(per_subject={"nutrition": 0.99})
def test_fixture_style(mmlu):
    mmlu.evaluate(subjects="anatomy", shots=0, limit=1)  # one question: one shard has none of it
    mmlu.evaluate(subjects=["nutrition", "sociology"], shots=0, limit=7)
"""


# -- assignment ---------------------------------------------------------------------------------
class _Data:
    def __init__(self, subjects, n):
        self.rows = {s: [type("Q", (), {"subject": s, "index": i})() for i in range(n)] for s in subjects}

    def test_questions(self, subject, limit):
        rows = self.rows[subject]
        return rows if limit is None else rows[:limit]


def test_shards_partition_every_evaluation_and_are_stable_when_subjects_are_added():
    few, more = _Data(["anatomy", "virology"], 50), _Data(["anatomy", "virology", "marketing", "law"], 50)
    for count in (1, 2, 3, 5):
        for subject in ("anatomy", "virology"):
            parts = [
                [q.index for q in ShardedData(few, Shard(i, count)).test_questions(subject, None)]
                for i in range(1, count + 1)
            ]
            assert sorted(i for p in parts for i in p) == list(range(50))  # each question exactly once
            # Adding subjects moves no question: the same shard holds the same questions.
            assert parts == [
                [q.index for q in ShardedData(more, Shard(i, count)).test_questions(subject, None)]
                for i in range(1, count + 1)
            ]
            # A limit takes a prefix of the subject and keeps each question in its shard.
            limited = [
                [q.index for q in ShardedData(few, Shard(i, count)).test_questions(subject, 20)]
                for i in range(1, count + 1)
            ]
            assert limited == [[i for i in p if i < 20] for p in parts]
    sizes = [sum(shard_of(s, i, 3) == k for s in SUBJECTS for i in range(100)) for k in (1, 2, 3)]
    assert min(sizes) > 150  # 600 questions spread over 3 shards, not piled into one


def test_shard_option_is_checked():
    assert parse_shard("2/3") == Shard(2, 3) and str(parse_shard(" 1 / 4 ")) == "1/4"
    for bad in ("0/3", "4/3", "3", "a/b", "1/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)


# -- end to end ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    return {
        "data": write_mmlu_csvs(root / "data", SUBJECTS, n_test=10, n_dev=5, seed=3, a_share=0.8),
        "good": save_answer_a_model(root / "good", boost=8.0),
        "degraded": save_answer_a_model(root / "degraded", boost=0.0, noise=0.05),
    }


def run(pytester, world, model, *extra):
    return pytester.runpytest_inprocess(
        "--mmlu-model",
        str(world[model]),
        "--mmlu-data",
        str(world["data"]),
        "-p",
        "no:cacheprovider",
        "--mmlu-no-cache",
        *extra,
    )


def merge(*args):
    return subprocess.run(
        [sys.executable, "-m", "pytest_mmlu.cli", "merge", *map(str, args)], capture_output=True, text=True
    )


def per_question(report):
    return {
        (t["nodeid"], i): [
            (q["subject"], q["index"], q["target"], q["prediction"], q["loglikelihoods"]) for q in ev["questions"]
        ]
        for t in report["tests"]
        for i, ev in enumerate(t["evaluations"])
    }


def verdicts(report):
    return {
        (t["nodeid"], i): (ev["n"], ev["accuracy"], sorted(ev["breaches"]), (ev.get("regression") or {}).get("verdict"))
        for t in report["tests"]
        for i, ev in enumerate(t["evaluations"])
    }


def test_two_shards_plus_merge_equal_one_unsharded_run(pytester, world):
    pytester.makepyfile(test_gate=SUITE)
    baseline = pytester.path / "baseline.json"
    pytester.makepyfile(test_gate=SUITE.replace("0.99", "0.0"))  # the last release passed everything
    run(pytester, world, "good", "--mmlu-baseline", baseline, "--mmlu-update-baseline").assert_outcomes(passed=4)
    pytester.makepyfile(test_gate=SUITE)

    whole = pytester.path / "whole.json"
    result = run(pytester, world, "degraded", "--mmlu-baseline", baseline, "--mmlu-report", whole)
    result.assert_outcomes(passed=1, failed=3)
    whole_summary = result.stdout.lines[
        result.stdout.lines.index(next(ln for ln in result.stdout.lines if "MMLU summary" in ln)) + 1 :
    ]

    shards = [pytester.path / f"shard-{i}.json" for i in (1, 2)]
    for i, path in enumerate(shards, start=1):
        result = run(pytester, world, "degraded", "--mmlu-shard", f"{i}/2", "--mmlu-report", path)
        result.assert_outcomes(passed=4)  # floors and no-regression wait for the whole
        result.stdout.fnmatch_lines(["*test_gate.py::test_floor_missed_on_the_whole", "*anatomy,virology*at merge"])
        data = json.loads(path.read_text())
        assert data["shard"] == {"index": i, "count": 2}
        n = sum(ev["n"] for t in data["tests"] for ev in t["evaluations"])
        assert 0 < n < sum(ev["n"] for t in json.loads(whole.read_text())["tests"] for ev in t["evaluations"])

    merged = pytester.path / "merged.json"
    out = merge(*shards, "-o", merged, "--baseline", baseline)
    assert out.returncode == 1, out.stderr
    a, b = json.loads(whole.read_text()), json.loads(merged.read_text())
    assert [t["nodeid"] for t in a["tests"]] == [t["nodeid"] for t in b["tests"]]
    assert [t["outcome"] for t in a["tests"]] == [t["outcome"] for t in b["tests"]]
    qa, qb = per_question(a), per_question(b)
    assert qa.keys() == qb.keys()
    for key in qa:
        assert [q[:4] for q in qa[key]] == [q[:4] for q in qb[key]], key
        for x, y in zip(qa[key], qb[key]):
            assert max(abs(u - v) for u, v in zip(x[4], y[4])) <= 1e-5, (key, x, y)
    assert verdicts(a) == verdicts(b)
    assert any(v[3] == "regressed" for v in verdicts(b).values())  # the gates did judge something
    # The merged summary's table and breaches are the unsharded run's (timings and peaks aside).
    merged_lines = out.stdout.splitlines()

    def gist(lines):
        keep = [ln for ln in lines if ln.startswith(("BREACH", "test_gate.py", "  test_"))]
        return [ln.split()[0] if ln.startswith("  test_") else ln for ln in keep]

    assert gist(merged_lines) == gist(whole_summary)
    # 100 columns, except a path longer than a line, which is never broken: it stands alone
    # (pytest's tmp paths under xdist run past 100 characters).
    assert all(len(line) <= 100 or len(line.split()) == 1 for line in merged_lines), [
        line for line in merged_lines if len(line) > 100
    ]


def test_merge_refuses_what_it_cannot_join(pytester, world):
    pytester.makepyfile(test_gate=SUITE)
    paths = {name: pytester.path / f"{name}.json" for name in ("s1", "s2", "s2_batch", "s2_model", "whole")}
    run(pytester, world, "good", "--mmlu-shard", "1/2", "--mmlu-report", paths["s1"])
    run(pytester, world, "good", "--mmlu-shard", "2/2", "--mmlu-report", paths["s2"])
    run(pytester, world, "good", "--mmlu-shard", "2/2", "--mmlu-batch-size", "2", "--mmlu-report", paths["s2_batch"])
    run(pytester, world, "degraded", "--mmlu-shard", "2/2", "--mmlu-report", paths["s2_model"])
    run(pytester, world, "good", "-k", "floor_met", "--mmlu-report", paths["whole"])

    cases = [
        ([paths["s1"]], "incomplete set of shards: missing 2/2 (have 1/2 from *s1.json)"),
        ([paths["s1"], paths["s1"]], "shard 1/2 given twice: *"),
        (
            [paths["s1"], paths["s2_batch"]],
            "shards made with different settings (batch_size): batch_size is "
            "'auto' in *s1.json (shard 1/2), 2 in *s2_batch.json (shard 2/2)",
        ),
        (
            [paths["s1"], paths["s2_model"]],
            "shards made with different models: model is '*good' in *, '*degraded' in *",
        ),
        ([paths["s1"], paths["whole"]], "*whole.json: not a shard report (it was not made with --mmlu-shard I/N)"),
    ]
    for args, message in cases:
        out = merge(*args)
        assert out.returncode == 2, (args, out.stdout)
        from fnmatch import fnmatch

        assert fnmatch(out.stderr.strip(), f"pytest-mmlu merge: {message}"), out.stderr
    out = merge(paths["s1"], paths["s2"])
    assert out.returncode == 1  # the complete set merges; the floor of 0.99 fails on the whole
    assert "BREACH MMLU accuracy" in out.stdout and "< floor 0.990" in out.stdout
