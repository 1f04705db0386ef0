"""lm-eval files both ways, with files the real lm-eval command line writes in the test:
its --log_samples output gates a run as a baseline, and --mmlu-report-lm-eval writes files
that lm-eval's own tools read, equal to lm-eval's for the same questions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from factories import save_answer_a_model, write_mmlu_csvs

pytestmark = pytest.mark.slow
SUBJECTS = ["anatomy", "virology"]
SHOTS, LIMIT = 2, 6
SUITE = """
import pytest

@pytest.mark.mmlu(subjects=["anatomy", "virology"], shots={shots}, limit={limit})
@pytest.mark.mmlu_no_regression(max_drop=0.02, alpha=0.05)
def test_no_regression(mmlu_result):
    pass
"""


def lm_eval_tasks(folder: Path, data_dir: Path) -> Path:
    """lm-eval's own default MMLU task (its YAML template) per subject, reading the parquet of
    ``data_dir``'s questions instead of the hub (the tests run offline)."""
    import datasets
    import lm_eval

    from pytest_mmlu.mmlu.data import MmluData

    data = MmluData(str(data_dir))
    template = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default" / "_default_template_yaml"
    folder.mkdir(parents=True)
    for subject in SUBJECTS:
        files = {}
        for split in ("dev", "test"):
            rows = data.split(subject, split)
            files[split] = folder / f"{subject}-{split}.parquet"
            datasets.Dataset.from_dict(
                {
                    "question": [q.question for q in rows],
                    "subject": [subject] * len(rows),
                    "choices": [list(q.choices) for q in rows],
                    "answer": [q.answer for q in rows],
                }
            ).to_parquet(files[split])
        (folder / f"mmlu_{subject}.yaml").write_text(
            f"include: {template}\ntask: mmlu_{subject}\ntask_alias: {subject}\ndataset_path: parquet\n"
            f"dataset_name: null\ndataset_kwargs:\n  data_files:\n    test: {files['test']}\n"
            f"    dev: {files['dev']}\n"
            f'description: "The following are multiple choice questions (with answers) about '
            f'{subject}.\\n\\n"\n'
        )
    return folder


def run_lm_eval_cli(model: Path, tasks: Path, out: Path, *flags: str, limit: int = LIMIT) -> Path:
    """The real `lm_eval run ... --log_samples --output_path OUT [flags]`; returns OUT."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lm_eval",
            "run",
            "--model",
            "hf",
            "--model_args",
            f"pretrained={model},dtype=float32",
            "--tasks",
            ",".join(f"mmlu_{s}" for s in SUBJECTS),
            "--include_path",
            str(tasks),
            "--num_fewshot",
            str(SHOTS),
            "--limit",
            str(limit),
            "--device",
            "cpu",
            "--batch_size",
            "4",
            "--log_samples",
            "--output_path",
            str(out),
            *flags,
        ],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "HF_DATASETS_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list(out.rglob("results_*.json"))) == 1
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_eval_files")
    data = write_mmlu_csvs(root / "data", SUBJECTS, n_test=10, n_dev=5, seed=3, a_share=0.8)
    good = save_answer_a_model(root / "good", boost=8.0)
    tasks = lm_eval_tasks(root / "tasks", data)
    return {
        "data": data,
        "good": good,
        "tasks": tasks,
        "degraded": save_answer_a_model(root / "degraded", boost=0.0, noise=0.05),
        "other_data": write_mmlu_csvs(root / "other" / "data", SUBJECTS, n_test=10, n_dev=5, seed=4, a_share=0.8),
        "lm_eval_out": run_lm_eval_cli(good, tasks, root / "lm-eval-out"),
    }


def run(pytester, world, model, data="data", shots=SHOTS, limit=LIMIT, *extra):
    pytester.makepyfile(test_gate=SUITE.format(shots=shots, limit=limit))
    model = world[model] if isinstance(model, str) else model  # a name in world, or a folder
    return pytester.runpytest_inprocess(
        "--mmlu-model",
        str(model),
        "--mmlu-data",
        str(world[data]),
        "-p",
        "no:cacheprovider",
        "--mmlu-no-cache",
        *map(str, extra),
    )


def test_lm_eval_log_samples_gate_a_run_as_its_baseline(pytester, world):
    baseline = world["lm_eval_out"]
    report = pytester.path / "r.json"
    result = run(pytester, world, "good", "data", SHOTS, LIMIT, "--mmlu-baseline", baseline, "--mmlu-report", report)
    result.assert_outcomes(passed=1)
    regression = json.loads(report.read_text())["tests"][0]["evaluations"][0]["regression"]
    lm_eval_results = json.loads(next(baseline.rglob("results_*.json")).read_text())["results"]
    accs = [lm_eval_results[f"mmlu_{s}"]["acc,none"] for s in SUBJECTS]
    assert regression["base_accuracy"] == pytest.approx(sum(accs) / len(accs))  # same n per subject
    assert regression["verdict"] == "unchanged" and regression["lost"] == regression["gained"] == 0

    # The results file alone (samples beside it) works as well as its folder.
    results_file = next(baseline.rglob("results_*.json"))
    result = run(pytester, world, "degraded", "data", SHOTS, LIMIT, "--mmlu-baseline", results_file)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["MMLU regression vs baseline: 0.* -> 0.* (n=12; * lost, * gained; McNemar p=0.0* < 0.05)"]
    )


def test_lm_eval_files_made_otherwise_are_refused_with_the_reason(pytester, world, tmp_path):
    baseline = world["lm_eval_out"]
    cases = [
        (("data", 1, LIMIT), "*was run 2-shot, this evaluation is 1-shot"),
        (
            ("data", SHOTS, 8),
            "*the lm-eval run has no sample for anatomy#6 (mmlu_anatomy has doc_ids 0-5; run it with a larger --limit)",
        ),
        (("other_data", SHOTS, LIMIT), "*made on other data: lm-eval's anatomy#0 is not this run's question*"),
    ]
    for (data, shots, limit), line in cases:
        result = run(pytester, world, "good", data, shots, limit, "--mmlu-baseline", baseline)
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(
            [
                f"MMLU baseline {baseline} cannot serve *test_no_regression*: " + line.lstrip("*")
                if not line.startswith("*")
                else f"MMLU baseline {baseline} cannot serve *{line}"
            ]
        )

    # A run that applied a chat template, or lacks the samples, is refused too.
    copy = tmp_path / "chat"
    copy.mkdir()
    for f in next(baseline.rglob("results_*.json")).parent.iterdir():
        (copy / f.name).write_text(f.read_text())
    results_file = next(copy.glob("results_*.json"))
    data = json.loads(results_file.read_text())
    results_file.write_text(json.dumps({**data, "chat_template": "{{ messages }}", "chat_template_sha": "x"}))
    result = run(pytester, world, "good", "data", SHOTS, LIMIT, "--mmlu-baseline", copy)
    result.stdout.fnmatch_lines(
        ["*was made with other prompts (baseline: chat template sha256 x; this run: no chat template)*"]
    )
    for f in copy.glob("samples_*"):
        f.unlink()
    result = run(pytester, world, "good", "data", SHOTS, LIMIT, "--mmlu-baseline", copy)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*no samples_mmlu_*.jsonl beside it: a baseline needs lm-eval's per-question "
            "output (run lm-eval with --log_samples)"
        ]
    )


def test_report_lm_eval_writes_what_lm_eval_writes(pytester, world):
    ours_dir = pytester.path / "ours"
    result = run(
        pytester,
        world,
        "good",
        "data",
        SHOTS,
        LIMIT,
        "--mmlu-report-lm-eval",
        ours_dir,
        "--mmlu-baseline",
        world["lm_eval_out"],
    )
    result.assert_outcomes(passed=1)
    # The note wraps at 100 columns, so where its path breaks depends on the tmp path's length.
    out = " ".join(result.stdout.str().split())
    assert f"pytest-mmlu: lm-eval results written under {ours_dir} (3 files)" in out

    their_samples = assert_same_files(ours_dir, world["lm_eval_out"])
    flags = {r[1] for rows in their_samples.values() for s in rows for r in s["filtered_resps"]}
    assert flags == {"True", "False"}  # both kinds compared (the model's ' A' is greedy, the rest not)

    # And our files gate a run as lm-eval's do.
    run(pytester, world, "good", "data", SHOTS, LIMIT, "--mmlu-baseline", ours_dir).assert_outcomes(passed=1)


def read_lm_eval_files(folder: Path) -> tuple[dict, dict]:
    """A run's results and samples, found as lm-eval's own tools find them."""
    from lm_eval.utils import (
        get_file_task_name,
        get_results_filenames,
        get_sample_results_filenames,
    )

    files = sorted(str(p) for p in folder.rglob("*.json*"))
    (results_path,) = get_results_filenames(files)
    samples = {
        get_file_task_name(Path(f).name): [json.loads(ln) for ln in Path(f).read_text().splitlines()]
        for f in get_sample_results_filenames(files)
    }
    return json.loads(Path(results_path).read_text()), samples


def assert_same_files(ours_dir: Path, theirs_dir: Path) -> dict:
    """Our files hold what lm-eval's hold for the same questions: metrics, prompts, hashes, the
    greedy flags, log-likelihoods within 1e-4, and the run's prompt format. Returns lm-eval's samples."""
    theirs, their_samples = read_lm_eval_files(theirs_dir)
    ours, our_samples = read_lm_eval_files(ours_dir)
    assert set(ours["results"]) == set(theirs["results"]) == set(our_samples) == set(their_samples)
    for task in theirs["results"]:
        for key in ("acc,none", "acc_stderr,none", "alias", "sample_len"):
            assert ours["results"][task][key] == pytest.approx(theirs["results"][task][key]), (task, key)
        assert ours["n-shot"][task] == theirs["n-shot"][task] == SHOTS
        assert ours["n-samples"][task] == theirs["n-samples"][task]
        for mine, real in zip(our_samples[task], their_samples[task], strict=True):
            for key in ("doc_id", "doc", "target", "arguments", "doc_hash", "prompt_hash", "target_hash", "acc"):
                assert mine[key] == real[key], (task, key)
            for a, b in zip(mine["filtered_resps"], real["filtered_resps"], strict=True):
                assert abs(float(a[0]) - float(b[0])) <= 1e-4
                assert a[1] == b[1], (task, "is_greedy")  # "True"/"False", as lm-eval writes it
            assert [r[0][1] for r in mine["resps"]] == [r[0][1] for r in real["resps"]]
        assert ours["task_hashes"][task] == theirs["task_hashes"][task]
    for key in (
        "chat_template",
        "chat_template_sha",
        "system_instruction",
        "system_instruction_sha",
        "fewshot_as_multiturn",
    ):
        assert ours[key] == theirs[key], key
    return their_samples


# Whitespace at both ends: lm-eval takes the instruction verbatim, and so must we.
CHAT_INSTRUCTION = " Answer with one letter.\n"
CHAT_LIMIT = 3


@pytest.mark.parametrize("multiturn", [True], ids=["multiturn"])  # single turn renders alike (test_chat_templates)
def test_chat_template_files_equal_lm_evals_and_lm_evals_gate_a_chat_run(pytester, world, smollm2_dir, multiturn):  # noqa: F811
    """lm-eval's command line with --apply_chat_template (--fewshot_as_multiturn, --system_instruction)
    on SmolLM2-135M-Instruct: our --mmlu-report-lm-eval files equal its files for the same questions
    (rendered prompts, hashes, the template and instruction fields), and its sample logs are the
    baseline of a chat run of ours."""
    theirs_dir = run_lm_eval_cli(
        smollm2_dir,
        world["tasks"],
        pytester.path / "lm-eval-chat",
        "--apply_chat_template",
        "--fewshot_as_multiturn",
        str(multiturn).lower(),
        "--system_instruction",
        CHAT_INSTRUCTION,
        limit=CHAT_LIMIT,
    )
    ours_dir, report = pytester.path / "ours-chat", pytester.path / "r.json"
    result = run(
        pytester,
        world,
        smollm2_dir,
        "data",
        SHOTS,
        CHAT_LIMIT,
        "--mmlu-chat-template",
        f"--mmlu-fewshot-as-multiturn={str(multiturn).lower()}",
        f"--mmlu-system-instruction={CHAT_INSTRUCTION}",
        "--mmlu-baseline",
        theirs_dir,
        "--mmlu-report",
        report,
        "--mmlu-report-lm-eval",
        ours_dir,
    )
    result.assert_outcomes(passed=1)
    regression = json.loads(report.read_text())["tests"][0]["evaluations"][0]["regression"]
    assert regression["verdict"] == "unchanged" and regression["lost"] == regression["gained"] == 0
    assert regression["n"] == len(SUBJECTS) * CHAT_LIMIT

    their_samples = assert_same_files(ours_dir, theirs_dir)
    theirs = read_lm_eval_files(theirs_dir)[0]
    assert theirs["chat_template"] and theirs["fewshot_as_multiturn"] is multiturn
    assert theirs["system_instruction"] == CHAT_INSTRUCTION  # taken verbatim by lm-eval
    arguments = their_samples[f"mmlu_{SUBJECTS[0]}"][0]["arguments"]
    assert arguments["gen_args_0"]["arg_1"] == "A" and "<|im_start|>" in arguments["gen_args_0"]["arg_0"]

    # Our chat files gate a chat run as lm-eval's do.
    run(
        pytester,
        world,
        smollm2_dir,
        "data",
        SHOTS,
        CHAT_LIMIT,
        "--mmlu-chat-template",
        f"--mmlu-fewshot-as-multiturn={str(multiturn).lower()}",
        f"--mmlu-system-instruction={CHAT_INSTRUCTION}",
        "--mmlu-baseline",
        ours_dir,
    ).assert_outcomes(passed=1)
