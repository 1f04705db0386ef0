"""A baseline answers only for the same evaluation, with answers that are answers: the lookups
of our reports and of lm-eval files, a baseline update that would record a regression, and
the command line's own checks."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
from factories import made_up_identity, make_result, make_tokenizer, write_mmlu_csvs

from pytest_mmlu.markers import NoRegression
from pytest_mmlu.mmlu.data import MmluData
from pytest_mmlu.mmlu.results import QuestionResult
from pytest_mmlu.regression import regression
from pytest_mmlu.reports.baseline import Baseline
from pytest_mmlu.reports.lm_eval_read import LmEvalBaseline
from pytest_mmlu.reports.lm_eval_write import write_lm_eval

RULE = NoRegression(0.02, 0.05)
HOW = "create or refresh it with --mmlu-baseline PATH --mmlu-update-baseline"
TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def entry(data: MmluData, right=(True, True, True), prompt_format=None) -> dict:
    questions = [
        QuestionResult.scored("anatomy", i, 0, (-0.1, -2.0, -3.0, -4.0) if ok else (-2.0, -0.1, -3.0, -4.0))
        for i, ok in enumerate(right)
    ]
    fingerprint = data.fingerprint(["anatomy"])
    result = make_result(
        questions, shots=1, limit=len(right), data_fingerprint=fingerprint, prompt_format=prompt_format
    )
    result.identity = made_up_identity(
        [("anatomy", i) for i in range(len(right))], 1, prompt_format=prompt_format, data=fingerprint, software={}
    )
    return result.to_dict()


@pytest.fixture(scope="module")
def datas(tmp_path_factory):
    root = tmp_path_factory.mktemp("datas")
    a = write_mmlu_csvs(root / "a", ["anatomy"], n_test=3, n_dev=2, seed=0)
    b = write_mmlu_csvs(root / "b", ["anatomy"], n_test=3, n_dev=2, seed=0)
    dev = b / "dev" / "anatomy_dev.csv"
    dev.write_text(dev.read_text().replace("?", " (another example)?", 1))  # other few-shot examples only
    return MmluData(str(a)), MmluData(str(b))


def lm_eval_files(tmp_path, data, ev, tokenizer=None) -> str:
    write_lm_eval(
        tmp_path,
        {"tests": [{"nodeid": "t", "evaluations": [ev]}], "model": {"model": "m"}, "data": data.spec},
        data,
        tokenizer,
    )
    return str(next(tmp_path.rglob("results_*.json")))


def test_an_lm_eval_run_checked_on_other_data_is_never_compared_as_this_runs(tmp_path, datas):
    """merge --data SOURCE: the lm-eval files are checked against SOURCE, and the evaluation
    was made on another copy: the baseline's identity carries SOURCE's fingerprint."""
    a, b = datas
    path = lm_eval_files(tmp_path, b, entry(b))
    baseline = LmEvalBaseline.load(path, b)
    verdict = regression("t", entry(a), RULE, baseline)
    assert verdict.kind == "missing-baseline"
    assert (
        verdict.line == f"MMLU baseline entry for t (anatomy, 1-shot, limit 3) was made on other data "
        f"(fingerprint differs); {HOW}"
    )
    assert regression("t", entry(b), RULE, LmEvalBaseline.load(path, b)).kind == "unchanged"


def test_an_lm_eval_chat_run_with_other_few_shot_examples_cannot_serve(tmp_path, datas):
    """Its template is this run's (same sha256), its few-shot examples are not: the prompts,
    rendered with the run's template through this run's tokenizer, are compared one by one."""
    a, b = datas
    tokenizer = make_tokenizer()
    tokenizer.chat_template = TEMPLATE
    chat = {
        "chat_template": True,
        "chat_template_sha256": hashlib.sha256(TEMPLATE.encode()).hexdigest(),
        "fewshot_as_multiturn": True,
        "system_instruction": None,
    }
    path = lm_eval_files(tmp_path, b, entry(b, prompt_format=chat), tokenizer)
    other = regression("t", entry(a, prompt_format=chat), RULE, LmEvalBaseline.load(path, a, lambda: tokenizer))
    assert other.kind == "missing-baseline"
    assert other.line.endswith(
        "lm-eval's prompt for anatomy#0 differs from this run's (other few-shot examples or template)"
    )
    same = regression("t", entry(b, prompt_format=chat), RULE, LmEvalBaseline.load(path, b, lambda: tokenizer))
    assert same.kind == "unchanged"
    no_tokenizer = regression("t", entry(b, prompt_format=chat), RULE, LmEvalBaseline.load(path, b))
    assert "cannot render this run's prompts with the lm-eval run's chat template" in no_tokenizer.line


def test_a_baseline_whose_scores_are_not_finite_cannot_serve(tmp_path, datas):
    a, _ = datas
    nan = entry(a)
    nan["questions"][1]["loglikelihoods"][0] = math.nan  # NaN > x is False: an argmax would answer A
    ours = regression("t", entry(a), RULE, Baseline({"tests": [{"nodeid": "t", "evaluations": [nan]}]}, "b.json"))
    assert ours.line == (
        f"MMLU baseline entry for t (anatomy, 1-shot, limit 3) has scores that are not finite for "
        f"1 questions (anatomy#1); {HOW}"
    )
    path = lm_eval_files(tmp_path, a, entry(a))
    samples = next(tmp_path.rglob("samples_*.jsonl"))
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    rows[0]["filtered_resps"][0][0] = "nan"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert regression("t", entry(a), RULE, LmEvalBaseline.load(path, a)).kind == "missing-baseline"


def test_a_variant_s_entry_is_never_the_full_model_s_baseline():
    """A test that evaluates one spec on two variants: each is matched with its own entry."""
    from pytest_mmlu.identity import with_questions

    def ev(variant, right):
        e = {
            "subjects": ["anatomy"],
            "label": "anatomy",
            "shots": 0,
            "limit": 4,
            "n": 4,
            "variant": variant,
            "per_subject": {},
            "dtype": "float32",
            "data_fingerprint": "d",
            "questions": [
                {
                    "subject": "anatomy",
                    "index": i,
                    "target": 0,
                    "prediction": 0 if ok else 1,
                    "loglikelihoods": [0.0] * 4,
                }
                for i, ok in enumerate(right)
            ],
        }
        e["identity"] = with_questions(
            {
                "quantization": "none" if variant == "full" else variant,
                "adapter": None,
                "merge_adapter": False,
                "dtype": "float32",
                "prompt": None,
                "data": "d",
                "shots": 0,
            },
            [("anatomy", i) for i in range(4)],
        )
        return e

    baseline = Baseline(
        {"tests": [{"nodeid": "t", "evaluations": [ev("int8", [False] * 4), ev("full", [True] * 4)]}]}, "b.json"
    )
    assert regression("t", ev("full", [True] * 4), NoRegression(0.02, 0.5), baseline).kind == "unchanged"
    assert regression("t", ev("int8", [False] * 4), NoRegression(0.02, 0.5), baseline).kind == "unchanged"
    only_int8 = Baseline({"tests": [{"nodeid": "t", "evaluations": [ev("int8", [True] * 4)]}]}, "b.json")
    line = regression("t", ev("full", [True] * 4), RULE, only_int8).line
    assert line == (
        "MMLU baseline entry for t (anatomy, 0-shot, limit 4) was made with another quantization "
        f"(int8 in baseline, none in this run); {HOW}"
    )


def test_compare_checks_its_thresholds_as_the_marker_does(tmp_path, capsys):
    from pytest_mmlu.cli import main

    for args, message in (
        (["--max-drop", "2"], "--max-drop must be in [0, 1], got 2"),
        (["--alpha", "0"], "--alpha must be strictly between 0 and 1, got 0"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), *args])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_updating_the_baseline_keeps_the_other_variants_entries(tmp_path):
    """A full-model job and an int8 job update one file: each keeps the other's entry."""
    from pytest_mmlu.identity import with_questions
    from pytest_mmlu.reports.baseline import write_baseline

    def report(variant):
        quantization = "none" if variant == "full" else variant
        identity = with_questions(
            {
                "quantization": quantization,
                "adapter": None,
                "merge_adapter": False,
                "dtype": "float32",
                "prompt": None,
                "data": "d",
                "shots": 0,
            },
            [("anatomy", 0)],
        )
        ev = {
            "subjects": ["anatomy"],
            "shots": 0,
            "limit": 1,
            "n": 1,
            "variant": variant,
            "identity": identity,
            "questions": [
                {"subject": "anatomy", "index": 0, "target": 0, "prediction": 0, "loglikelihoods": [0.0] * 4}
            ],
        }
        return {"schema": 1, "tests": [{"nodeid": "t", "evaluations": [ev]}]}

    path = str(tmp_path / "b.json")
    write_baseline(path, report("full"))
    write_baseline(path, report("int8"))
    write_baseline(path, report("int8"))  # the same variant again: replaced, not doubled
    (test,) = json.loads((tmp_path / "b.json").read_text())["tests"]
    assert sorted(e["variant"] for e in test["evaluations"]) == ["full", "int8"]


def test_compare_judges_only_the_evaluations_old_has_with_its_own_rule(tmp_path):
    from pytest_mmlu.cli import main
    from pytest_mmlu.reports.report import write_json_atomic

    def ev(subject):
        return {
            "subjects": [subject],
            "label": subject,
            "shots": 0,
            "limit": 2,
            "n": 2,
            "accuracy": 1.0,
            "per_subject": {subject: {"accuracy": 1.0, "n": 2}},
            "data_fingerprint": "f",
            "questions": [
                {"subject": subject, "index": i, "target": 0, "prediction": 0, "loglikelihoods": [0.0] * 4}
                for i in range(2)
            ],
        }

    old, new, skipped = tmp_path / "old.json", tmp_path / "new.json", tmp_path / "skipped.json"
    write_json_atomic(
        old, {"schema": 1, "tests": [{"nodeid": "t", "outcome": "passed", "evaluations": [ev("anatomy")]}]}
    )
    write_json_atomic(
        new,
        {"schema": 1, "tests": [{"nodeid": "t", "outcome": "passed", "evaluations": [ev("anatomy"), ev("virology")]}]},
    )
    assert main(["compare", str(old), str(new)]) == 0  # virology: not in OLD, not compared, no gate
    write_json_atomic(
        skipped,
        {
            "schema": 1,
            "tests": [
                {
                    "nodeid": "t",
                    "outcome": "skipped",
                    "evaluations": [],
                    "gates": {"floor": {"min": 0.5, "per_subject": {}}},
                }
            ],
        },
    )
    assert main(["compare", str(old), str(skipped)]) == 2  # nothing compared, nothing judged


@pytest.mark.parametrize("excused, code", [(True, 0), (False, 1)])
def test_compare_excuses_an_xfail_test_s_gate_only_as_its_raises_allows(tmp_path, capsys, excused, code):
    """A test marked xfail(raises=RuntimeError) that regressed is a failure, as pytest says."""
    from pytest_mmlu.cli import main
    from pytest_mmlu.reports.report import write_json_atomic

    def report(right, **test):
        questions = [
            {
                "subject": "anatomy",
                "index": i,
                "target": 0,
                "prediction": 0 if right else 1,
                "loglikelihoods": [0.0] * 4,
            }
            for i in range(20)
        ]
        ev = {"subjects": ["anatomy"], "label": "anatomy", "shots": 0, "limit": None, "n": 20}
        ev.update(accuracy=float(right), data_fingerprint="f", questions=questions)
        ev["per_subject"] = {"anatomy": {"accuracy": float(right), "n": 20}}
        return {"schema": 1, "tests": [{"nodeid": "t", "evaluations": [ev], **test}]}

    old, new = tmp_path / "old.json", tmp_path / "new.json"
    write_json_atomic(old, report(True, outcome="passed"))
    write_json_atomic(new, report(False, outcome="xpassed", xfail_excuses_gates=excused))
    assert main(["compare", str(old), str(new)]) == code
    assert ("xfailed" if excused else "FAILED") in capsys.readouterr().out


def test_each_fine_tune_has_its_own_baseline_entry(tmp_path):
    """Two adapters gated by one test, or by one job each updating one file: each is compared
    with its own entry (by its folder's name), never with the other fine-tune's."""
    from pytest_mmlu.reports.baseline import Baseline, write_baseline

    def entry(name, content, right):
        ev = make_result(
            [QuestionResult("anatomy", i, 0, 0 if right else 1, (0.0, -1.0, -2.0, -3.0)) for i in range(4)],
            variant=f"adapter {name}",
        ).to_dict()
        ev["identity"] = made_up_identity([("anatomy", i) for i in range(4)], 0, adapter=content, adapter_name=name)
        return ev

    def report(*entries):
        return {"schema": 1, "tests": [{"nodeid": "t", "evaluations": list(entries)}]}

    both = Baseline(report(entry("ft_code", "sha256:c", False), entry("ft_chat", "sha256:h", True)), "b.json")
    assert both.entry("t", entry("ft_chat", "sha256:h2", True))["variant"] == "adapter ft_chat"  # retrained
    assert both.entry("t", entry("ft_code", "sha256:c", True))["variant"] == "adapter ft_code"

    path = str(tmp_path / "b.json")
    write_baseline(path, report(entry("ft_chat", "sha256:h", True)))
    write_baseline(path, report(entry("ft_code", "sha256:c", False)))  # another job, the same file
    (test,) = json.loads((tmp_path / "b.json").read_text())["tests"]
    assert sorted(e["variant"] for e in test["evaluations"]) == ["adapter ft_chat", "adapter ft_code"]
