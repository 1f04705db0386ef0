"""Writing lm-eval files from reports, without lm-eval: the greedy flags (and reports written
before they were kept), and the chat template a report's prompts are rendered again with.
The files' equality with lm-eval's own is proven in test_lm_eval_files.py."""

from __future__ import annotations

import hashlib
import json

import pytest
from factories import make_result, make_tokenizer, write_mmlu_csvs

from pytest_mmlu.mmlu.data import MmluData
from pytest_mmlu.mmlu.results import EvaluationResult, QuestionResult
from pytest_mmlu.reports.lm_eval_write import write_lm_eval
from pytest_mmlu.reports.report import ReportError

TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return MmluData(str(write_mmlu_csvs(tmp_path_factory.mktemp("data"), ["anatomy"], n_test=3, n_dev=2)))


def report_of(data, *questions, prompt_format=None, omit_greedy=False):
    ev = make_result(
        questions,
        subjects=["anatomy"],
        shots=1,
        data_fingerprint=data.fingerprint(["anatomy"]),
        prompt_format=prompt_format,
    ).to_dict()
    if omit_greedy:
        for q in ev["questions"]:
            q.pop("is_greedy", None)
    return {"tests": [{"nodeid": "t", "evaluations": [ev]}], "model": {"model": "m"}, "data": "d"}


def samples(folder):
    (path,) = folder.rglob("samples_*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_greedy_flags_are_kept_and_older_reports_still_read(data, tmp_path):
    scored = QuestionResult.scored("anatomy", 0, 0, (-0.1, -2.0, -3.0, -4.0), (True, False, False, False))
    ev = report_of(data, scored)["tests"][0]["evaluations"][0]
    assert ev["questions"][0]["is_greedy"] == [True, False, False, False]
    assert EvaluationResult.from_dict(ev).questions[0] == scored  # the report round-trips
    write_lm_eval(tmp_path / "new", report_of(data, scored), data)
    assert samples(tmp_path / "new")[0]["filtered_resps"] == [
        ["-0.1", "True"],
        ["-2.0", "False"],
        ["-3.0", "False"],
        ["-4.0", "False"],
    ]

    # A report written before the flags were kept: read as unknown, written as "None".
    old = report_of(data, scored, omit_greedy=True)
    assert EvaluationResult.from_dict(old["tests"][0]["evaluations"][0]).questions[0].is_greedy is None
    write_lm_eval(tmp_path / "old", old, data)
    assert [r[1] for r in samples(tmp_path / "old")[0]["filtered_resps"]] == ["None"] * 4


def test_chat_prompts_are_rendered_with_the_template_the_evaluation_used(data, tmp_path):
    tokenizer = make_tokenizer()
    tokenizer.chat_template = TEMPLATE
    recorded = {
        "chat_template": True,
        "chat_template_sha256": hashlib.sha256(TEMPLATE.encode()).hexdigest(),
        "fewshot_as_multiturn": True,
        "system_instruction": "Be brief.",
    }
    report = report_of(data, QuestionResult.scored("anatomy", 1, 0, (-1.0, -2.0, -3.0, -4.0)), prompt_format=recorded)
    write_lm_eval(tmp_path / "chat", report, data, tokenizer)
    (sample,) = samples(tmp_path / "chat")
    prompt = sample["arguments"]["gen_args_0"]["arg_0"]
    assert prompt.startswith("<system>Be brief.\n\nThe following are") and prompt.endswith("Answer:\n<assistant>")
    assert prompt.count("<user>") == 2 and [a["arg_1"] for a in sample["arguments"].values()] == list("ABCD")
    assert sample["prompt_hash"] == hashlib.sha256(prompt.encode()).hexdigest()
    (results_path,) = (tmp_path / "chat").rglob("results_*.json")
    results = json.loads(results_path.read_text())
    assert (
        results["chat_template"],
        results["chat_template_sha"],
        results["fewshot_as_multiturn"],
        results["system_instruction"],
    ) == (TEMPLATE, recorded["chat_template_sha256"], True, "Be brief.")

    # A tokenizer holding another template cannot render the evaluation's prompts again.
    tokenizer.chat_template = TEMPLATE.replace("<assistant>", "<bot>")
    with pytest.raises(
        ReportError,
        match=r"the tokenizer's template \(sha256 \w{12}\) is not the one the "
        r"evaluations used \(sha256 " + recorded["chat_template_sha256"][:12],
    ):
        write_lm_eval(tmp_path / "other", report, data, tokenizer)


def test_files_are_written_from_the_data_the_evaluations_were_made_on(data, tmp_path):
    """merge --lm-eval DIR --data OTHER wrote the shards' scores under OTHER's questions."""
    other = MmluData(str(write_mmlu_csvs(tmp_path / "other", ["anatomy"], n_test=3, n_dev=2, seed=9)))
    report = report_of(data, QuestionResult.scored("anatomy", 0, 0, (-0.1, -2.0, -3.0, -4.0)))
    with pytest.raises(ReportError, match=r"the report's evaluations of anatomy were not made on the data .*other"):
        write_lm_eval(tmp_path / "out", report, other)
    smaller = MmluData(str(write_mmlu_csvs(tmp_path / "smaller", ["anatomy"], n_test=1, n_dev=2, seed=0)))
    with pytest.raises(ReportError, match="were not made on the data"):  # a line, not an IndexError
        write_lm_eval(
            tmp_path / "out", report_of(data, QuestionResult.scored("anatomy", 2, 0, (-0.1, -2.0, -3.0, -4.0))), smaller
        )
