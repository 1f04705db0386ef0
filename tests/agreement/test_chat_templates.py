"""Chat templates: prompts rendered as lm-eval 0.4.x renders them for the same flags, scored
as lm-eval's own ``hf`` backend scores them, with the rendered few-shot turns shared.
"""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest
from factories import real_mmlu_zip

from pytest_mmlu.mmlu.chat import ChatTemplateError, PromptFormat, PromptRenderer

SUBJECTS = ["abstract_algebra", "marketing"]
INSTRUCTION = "You are an expert in every field. Answer with one letter."
SPACED_INSTRUCTION = "  Answer with one letter.\n"  # whitespace at both ends: lm-eval keeps it
# A template that refuses the system role, as Gemma's and Mistral's do: lm-eval renders again
# without the system message (HFLM.apply_chat_template catches the TemplateError).
NO_SYSTEM_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


@pytest.fixture(scope="module")
def synthetic(mmlu_csv_dir):
    """The synthetic data and lm-eval's own tasks on it (loading lm-eval's task index is slow)."""
    from pytest_mmlu.lm_eval_adapter import mmlu_tasks
    from pytest_mmlu.mmlu.data import MmluData

    data = MmluData(str(mmlu_csv_dir))
    tasks = mmlu_tasks(data, [*SUBJECTS, "anatomy"])
    return data, {name.removeprefix("mmlu_"): task for name, task in tasks.items()}


def lm_eval_contexts(tokenizer, task, n, fmt: PromptFormat) -> list[str]:
    """lm-eval's own fewshot_context, rendering through HFLM.apply_chat_template itself."""
    from lm_eval.models.huggingface import HFLM

    hflm = SimpleNamespace(tokenizer=tokenizer, chat_template_args={})

    def apply(history, add_generation_prompt=True):
        return HFLM.apply_chat_template(hflm, history, add_generation_prompt)

    docs = list(task.test_docs())[:n]
    return [
        task.fewshot_context(
            doc,
            5,
            system_instruction=fmt.system_instruction,
            apply_chat_template=fmt.is_chat,
            fewshot_as_multiturn=fmt.fewshot_as_multiturn,
            chat_template=apply if fmt.is_chat else None,
        )
        for doc in docs
    ]


@pytest.mark.parametrize(
    "fmt",
    [
        PromptFormat(True, True, None),
        PromptFormat(True, False, None),
        PromptFormat(True, True, INSTRUCTION),
        PromptFormat(True, False, INSTRUCTION),
        PromptFormat(None, False, INSTRUCTION),
        PromptFormat(True, True, SPACED_INSTRUCTION),
        PromptFormat(None, False, SPACED_INSTRUCTION),
    ],
    ids=[
        "multiturn",
        "single-turn",
        "multiturn+system",
        "single-turn+system",
        "plain+system",
        "multiturn+spaced-system",
        "plain+spaced-system",
    ],
)
def test_rendering_is_lm_evals(smollm2_dir, synthetic, fmt):  # noqa: F811
    from transformers import AutoTokenizer

    data, tasks = synthetic
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    renderer = PromptRenderer(fmt, tokenizer)
    for subject in SUBJECTS:
        ours = renderer.contexts(subject, data.shots(subject, 5), data.test_questions(subject, 3))
        assert ours == lm_eval_contexts(tokenizer, tasks[subject], 3, fmt)


def test_a_template_without_a_system_role_drops_it_as_lm_eval_does(smollm2_dir, synthetic):  # noqa: F811
    from transformers import AutoTokenizer

    data, tasks = synthetic
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    tokenizer.chat_template = NO_SYSTEM_TEMPLATE
    fmt = PromptFormat(True, True, INSTRUCTION)
    ours = PromptRenderer(fmt, tokenizer).contexts(
        "anatomy", data.shots("anatomy", 5), data.test_questions("anatomy", 2)
    )
    assert ours == lm_eval_contexts(tokenizer, tasks["anatomy"], 2, fmt)
    assert "<system>" not in ours[0] and ours[0].endswith("<assistant>")


def test_template_selection_follows_lm_eval(smollm2_dir):  # noqa: F811
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    plain = tokenizer.chat_template
    assert PromptRenderer(PromptFormat(True), tokenizer).template == plain
    assert PromptRenderer(PromptFormat("anything"), tokenizer).template == plain  # one template: it
    tokenizer.chat_template = {"default": plain, "terse": NO_SYSTEM_TEMPLATE}
    assert PromptRenderer(PromptFormat(True), tokenizer).template == plain
    assert PromptRenderer(PromptFormat("terse"), tokenizer).template == NO_SYSTEM_TEMPLATE
    with pytest.raises(ChatTemplateError, match="no chat template 'nope'.*default, terse"):
        PromptRenderer(PromptFormat("nope"), tokenizer)
    tokenizer.chat_template = None
    with pytest.raises(ChatTemplateError, match="has no chat template"):
        PromptRenderer(PromptFormat(True), tokenizer)


@pytest.mark.slow
@pytest.mark.parametrize(
    "fmt, subjects",
    [(PromptFormat(True, True, INSTRUCTION), SUBJECTS), (PromptFormat(True, False, None), SUBJECTS[:1])],
    ids=["multiturn+system", "single-turn"],
)
def test_chat_template_agrees_with_lm_eval_hf(smollm2_dir, fmt, subjects):  # noqa: F811
    """lm-eval's hf backend with --apply_chat_template (and the same multiturn / system flags)
    on SmolLM2-135M-Instruct and real MMLU: same predictions, every log-likelihood within 1e-4;
    the rendered few-shot turns are computed once per subject (shared prefix)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from pytest_mmlu.lm_eval_adapter import bare_task_manager, mmlu_tasks
    from pytest_mmlu.marks import make_eval_spec
    from pytest_mmlu.mmlu.data import MmluData
    from pytest_mmlu.mmlu.evaluation import Evaluator
    from pytest_mmlu.mmlu.results import predict
    from pytest_mmlu.models.load import load_model
    from pytest_mmlu.settings import Settings

    limit = 2
    data = MmluData(str(real_mmlu_zip()))
    out = simple_evaluate(
        task_manager=bare_task_manager(),
        model=HFLM(pretrained=str(smollm2_dir), dtype="float32", batch_size=4, device="cpu"),
        tasks=list(mmlu_tasks(data, subjects).values()),
        num_fewshot=5,
        limit=limit,
        log_samples=True,
        bootstrap_iters=0,
        apply_chat_template=True,
        fewshot_as_multiturn=fmt.fewshot_as_multiturn,
        system_instruction=fmt.system_instruction,
    )
    theirs = {
        (task.removeprefix("mmlu_"), s["doc_id"]): [r[0][0] for r in s["resps"]]
        for task, samples in out["samples"].items()
        for s in samples
    }
    assert len(theirs) == len(subjects) * limit

    evaluator = Evaluator(load_model(Settings(model=str(smollm2_dir))), data, prompt_format=fmt)
    spec = make_eval_spec(subjects, 5, limit)
    result = evaluator.evaluate(spec)
    ours = {(q.subject, q.index): list(q.loglikelihoods) for q in result.questions}
    assert ours.keys() == theirs.keys()
    for key in theirs:
        assert predict(ours[key]) == predict(theirs[key]), key
        assert max(abs(a - b) for a, b in zip(ours[key], theirs[key])) <= 1e-4, key
    template = evaluator.loaded.tokenizer.chat_template
    assert result.prompt_format == {
        "chat_template": True,
        "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest(),
        "fewshot_as_multiturn": fmt.fewshot_as_multiturn,
        "system_instruction": fmt.system_instruction,
    }

    # Prefix sharing: each subject's rendered system turn and few-shot turns run once, so the
    # model sees far fewer tokens than the rows hold.
    requests, _ = evaluator.requests(spec)
    rows = [len(r.context) + len(r.continuation) - 1 for r in requests[::4]]
    per_subject = len(rows) // len(subjects)
    shared = [
        min(
            _common(requests[4 * i].context, requests[4 * j].context)
            for i in range(s * per_subject, (s + 1) * per_subject)
            for j in range(s * per_subject, (s + 1) * per_subject)
            if i != j
        )
        for s in range(len(subjects))
    ]
    assert min(shared) > 300  # the 5 rendered shots
    assert result.tokens <= sum(rows) - sum(s * (per_subject - 1) for s in shared)


def _common(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
