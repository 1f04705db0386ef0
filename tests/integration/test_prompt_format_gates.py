"""A baseline, or a shard, made with other prompts (chat template, few-shot turns, system
instruction) never gives a verdict on this run's prompts: the gate says what differs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from factories import make_result, save_answer_a_model, write_mmlu_csvs

from pytest_mmlu.markers import NoRegression
from pytest_mmlu.mmlu.chat import format_difference
from pytest_mmlu.mmlu.results import QuestionResult
from pytest_mmlu.prompt_identity import prompt_identity
from pytest_mmlu.regression import regression
from pytest_mmlu.reports.baseline import Baseline

CHAT = {
    "chat_template": True,
    "chat_template_sha256": "a" * 64,
    "fewshot_as_multiturn": True,
    "system_instruction": None,
}
RULE = NoRegression(0.02, 0.05)


def entry(prompt_format=None, omit=False):
    questions = [QuestionResult("anatomy", i, 0, 0 if i < 7 else 1, (0.0, -1.0, -2.0, -3.0)) for i in range(10)]
    ev = make_result(questions, data_fingerprint="d", prompt_format=prompt_format).to_dict()
    if omit:
        del ev["prompt_format"]  # a report written before prompt formats were recorded
    return ev


def baseline_of(ev):
    return Baseline({"tests": [{"nodeid": "t", "evaluations": [ev]}]}, "base.json")


@pytest.mark.parametrize(
    "base, ours, words",
    [
        (None, CHAT, "baseline: no chat template; this run: chat template sha256 aaaaaaaaaaaa"),
        (CHAT, None, "baseline: chat template sha256 aaaaaaaaaaaa; this run: no chat template"),
        (
            CHAT,
            {**CHAT, "chat_template_sha256": "b" * 64},
            "baseline: chat template sha256 aaaaaaaaaaaa; this run: chat template sha256 bbbbbbbbbbbb",
        ),
        (
            CHAT,
            {**CHAT, "fewshot_as_multiturn": False},
            "baseline: few-shot as separate turns; this run: few-shot in one user turn",
        ),
        (
            None,
            {**CHAT, "chat_template": None, "chat_template_sha256": None, "system_instruction": "Be brief."},
            "baseline: no system instruction; this run: system instruction 'Be brief.'",
        ),
        (
            CHAT,
            {**CHAT, "system_instruction": " Be brief."},
            "baseline: no system instruction; this run: system instruction ' Be brief.'",
        ),
    ],
)
def test_a_baseline_made_with_other_prompts_cannot_serve(base, ours, words):
    verdict = regression("t", entry(ours), RULE, baseline_of(entry(base)))
    assert verdict.kind == "missing-baseline" and verdict.fails
    assert verdict.line == (
        f"MMLU baseline entry for t (anatomy, 0-shot) was made with other prompts ({words}); "
        "create or refresh it with --mmlu-baseline PATH --mmlu-update-baseline"
    )


def test_the_same_prompts_are_compared():
    assert regression("t", entry(CHAT), RULE, baseline_of(entry(CHAT))).kind == "unchanged"
    # The template chosen by name or as the tokenizer's default: the same text, the same prompts.
    assert (
        regression("t", entry({**CHAT, "chat_template": "default"}), RULE, baseline_of(entry(CHAT))).kind == "unchanged"
    )
    # A report from before prompt formats were recorded was made with plain prompts.
    assert regression("t", entry(None), RULE, baseline_of(entry(None, omit=True))).kind == "unchanged"
    assert format_difference(None, {**CHAT, "chat_template": None, "fewshot_as_multiturn": True}) is None


# -- end to end: a plain baseline, a run with a system instruction; shards asked otherwise -------
SUITE = """
import pytest

@pytest.mark.mmlu(subjects=["anatomy", "virology"], shots=1, limit=6)
@pytest.mark.mmlu_no_regression(max_drop=0.02, alpha=0.05)
def test_no_regression(mmlu_result):
    pass
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("prompt_formats")
    return {
        "data": write_mmlu_csvs(root / "data", ["anatomy", "virology"], n_test=6, n_dev=2, seed=5, a_share=0.8),
        "model": save_answer_a_model(root / "model", boost=8.0),
    }


def run(pytester, world, *extra):
    pytester.makepyfile(test_gate=SUITE)
    return pytester.runpytest_inprocess(
        "--mmlu-model",
        str(world["model"]),
        "--mmlu-data",
        str(world["data"]),
        "-p",
        "no:cacheprovider",
        "--mmlu-no-cache",
        *map(str, extra),
    )


def test_a_plain_baseline_does_not_judge_a_run_with_a_system_instruction(pytester, world):
    baseline = pytester.path / "baseline.json"
    run(pytester, world, "--mmlu-baseline", baseline, "--mmlu-update-baseline").assert_outcomes(passed=1)
    run(pytester, world, "--mmlu-baseline", baseline).assert_outcomes(passed=1)
    result = run(pytester, world, "--mmlu-baseline", baseline, "--mmlu-system-instruction", "Answer with one letter.")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*MMLU baseline entry for *test_no_regression (anatomy,virology, 1-shot, limit 6) "
            "was made with other prompts (baseline: no system instruction; this run: system "
            "instruction 'Answer with one letter.'); create or refresh it*"
        ]
    )


def test_merge_refuses_shards_asked_with_other_prompts(pytester, world):
    shards = [pytester.path / f"s{i}.json" for i in (1, 2)]
    for i, path in enumerate(shards, start=1):
        run(pytester, world, "--mmlu-shard", f"{i}/2", "--mmlu-report", path)

    def merge():
        return subprocess.run(
            [sys.executable, "-m", "pytest_mmlu.cli", "merge", *map(str, shards)], capture_output=True, text=True
        )

    out = merge()  # merged and judged: the gate has no baseline here
    assert out.returncode == 1 and "needs --mmlu-baseline PATH" in out.stdout, out.stderr
    # Same settings, yet the second job's model folder held another chat template: its report
    # records it per evaluation (the settings alone do not show it).
    report = json.loads(shards[1].read_text())
    for ev in report["tests"][0]["evaluations"]:
        ev["prompt_format"] = CHAT
        ev["identity"]["prompt"] = prompt_identity(CHAT)
    shards[1].write_text(json.dumps(report))
    out = merge()
    assert out.returncode == 2, out.stdout
    assert out.stderr.strip().endswith(
        f"test_gate.py::test_no_regression: shards made with other prompts ({shards[0]} (shard 1/2): no chat "
        f"template; {shards[1]} (shard 2/2): chat template sha256 aaaaaaaaaaaa)"
    )
