"""MMLU prompts rendered with a chat template, exactly as lm-eval 0.4.x renders them.

lm-eval (``api/task.py`` ``fewshot_context`` and ``build_qa_turn``, ``api/utils.py``
``multiturn_to_singleturn``, ``models/huggingface.py`` ``apply_chat_template``) with
``--apply_chat_template`` builds these messages for an MMLU question:

- ``system``: the description ("The following are ... about anatomy.\\n\\n"), after
  ``--system_instruction`` joined to it by "\\n\\n" (no delimiter where either side has
  whitespace at the join);
- per few-shot example, ``user``: the question text ending in "Answer:", and
  ``assistant``: its letter ("A": the target delimiter is not part of a message);
- ``user``: the test question.

With ``--fewshot_as_multiturn`` (lm-eval's default with a chat template) they are
separate turns; without it the examples and the question are joined into one user
turn as plain text ("<q1> A\\n\\n<q2> B\\n\\n...<q>"). The tokenizer's template renders
them with ``add_generation_prompt=True``; a template that rejects the system role
(``jinja2.TemplateError``) is rendered again without the system message, as lm-eval
does. The continuations are "A".."D" with no target delimiter (MMLU has no
``gen_prefix``), so the whitespace that ends the generation prompt ("assistant\\n")
moves into the continuation under lm-eval's tokenization rule.

Without a chat template the plain prompt is the description, ``prompts.fewshot_text``
and the question, with the system instruction (if any) joined in front of the
description the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..prompt_identity import prompt_difference, prompt_identity
from .data import LETTERS, Question
from .prompts import CONTINUATIONS, FEWSHOT_DELIMITER, description, fewshot_text, question_text

CHAT_CONTINUATIONS = tuple(LETTERS)  # no target delimiter with a chat template (no gen_prefix)


class ChatTemplateError(ValueError):
    """The chat template asked for does not exist for this tokenizer."""


def sha256(text: str) -> str:
    """Hex sha256 of UTF-8 text: lm-eval's ``lm_eval.utils.hash_string`` (its chat_template_sha)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def maybe_delimit(prefix: str | None, suffix: str | None, delimiter: str) -> str:
    """lm-eval's join: ``delimiter`` only where neither side has whitespace at the join."""
    if not prefix:
        return suffix or ""
    if not suffix:
        return prefix
    if prefix[-1].isspace() or suffix[0].isspace():
        return prefix + suffix
    return prefix + delimiter + suffix


def select_template(tokenizer: Any, choice: bool | str) -> str:
    """The template lm-eval's ``TemplateLM.chat_template`` selects: ``True`` the tokenizer's
    (its ``"default"`` entry when it holds several), a name one of several (a name with a
    single template selects that template, as lm-eval does after a warning)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        name = "default" if choice is True else choice
        if name not in template:
            raise ChatTemplateError(
                f"the tokenizer has no chat template {name!r} (it has {', '.join(sorted(template))})"
            )
        return template[name]
    if not template:
        raise ChatTemplateError("the tokenizer has no chat template (chat_template is not set)")
    return template


@dataclass(frozen=True)
class PromptFormat:
    """How a question becomes a context and four continuations: plain text or a chat."""

    chat_template: bool | str | None = None  # None: plain text; True: the tokenizer's; or a name
    fewshot_as_multiturn: bool = False
    system_instruction: str | None = None

    @property
    def is_chat(self) -> bool:
        return self.chat_template is not None

    @property
    def continuations(self) -> tuple[str, ...]:
        return CHAT_CONTINUATIONS if self.is_chat else CONTINUATIONS

    def template_of(self, tokenizer: Any) -> str | None:
        """The chat template text this format renders with, None for plain text."""
        return None if self.chat_template is None else select_template(tokenizer, self.chat_template)

    def describe(self, template: str | None) -> dict[str, Any] | None:
        """What the report records: None for lm-eval's plain default."""
        if not self.is_chat and self.system_instruction is None:
            return None
        return {
            "chat_template": self.chat_template,
            "chat_template_sha256": None if template is None else sha256(template),
            "fewshot_as_multiturn": self.fewshot_as_multiturn,
            "system_instruction": self.system_instruction,
        }


def format_difference(
    base: Mapping[str, Any] | None, ours: Mapping[str, Any] | None, names: tuple[str, str] = ("baseline", "this run")
) -> str | None:
    """How two recorded prompt formats (``PromptFormat.describe``; None is plain) differ, in
    words (``"baseline: no chat template; this run: chat template sha256 1a2b..."``, each side
    called by ``names``), or None when they render the same prompts."""

    words = prompt_difference(prompt_identity(base), prompt_identity(ours))
    return None if words is None else f"{names[0]}: {words[0]}; {names[1]}: {words[1]}"


def prompt_format_of(settings: Any) -> PromptFormat:
    """The settings' prompt format; few-shot as multiturn defaults to on with a chat template,
    as lm-eval's command line does."""
    multiturn = settings.fewshot_as_multiturn
    if multiturn is None:
        multiturn = settings.chat_template is not None
    return PromptFormat(settings.chat_template, bool(multiturn), settings.system_instruction)


class PromptRenderer:
    """Renders the contexts of a subject's questions under one :class:`PromptFormat`."""

    def __init__(self, fmt: PromptFormat, tokenizer: Any = None) -> None:
        self.format = fmt
        self.tokenizer = tokenizer
        self.template = fmt.template_of(tokenizer)

    def system_prompt(self, subject: str) -> str:
        return maybe_delimit(self.format.system_instruction, description(subject), FEWSHOT_DELIMITER)

    def contexts(self, subject: str, shots: Sequence[Question], questions: Sequence[Question]) -> list[str]:
        system = self.system_prompt(subject)
        examples = [(question_text(s), LETTERS[s.answer]) for s in shots]
        if not self.format.is_chat:
            shared = system + fewshot_text(examples)
            return [shared + question_text(q) for q in questions]
        return [self.render(self.messages(system, examples, question_text(q))) for q in questions]

    def messages(self, system: str, examples: list[tuple[str, str]], question: str) -> list[dict[str, str]]:
        head = [{"role": "system", "content": system}] if system else []
        if self.format.fewshot_as_multiturn:
            turns = []
            for q, a in examples:
                turns += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            return head + turns + [{"role": "user", "content": question}]
        joined = fewshot_text(examples) + question
        return head + [{"role": "user", "content": joined}]

    def render(self, messages: list[dict[str, str]]) -> str:
        import jinja2

        try:
            return self._apply(messages)
        except jinja2.exceptions.TemplateError:
            return self._apply([m for m in messages if m["role"] != "system"])

    def _apply(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(
            messages,
            chat_template=self.template,
            tokenize=False,
            add_generation_prompt=True,
            continue_final_message=False,
        )
