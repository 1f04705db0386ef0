"""MMLU prompts and their tokenization, exactly as lm-eval's default ``mmlu_<subject>`` tasks.

Text (lm_eval/tasks/mmlu/default/_default_template_yaml): the subject's
description line, then ``shots`` dev questions each followed by " <letter>" and
a blank line, then the test question; the four continuations are " A".." D".

Tokens (lm_eval.api.model.TemplateLM._encode_pair and HFLM.tok_encode):
trailing whitespace of the context moves to the continuation; the whole string
and the context are encoded separately with the tokenizer's default special
tokens (none if the text already starts with the BOS string), and the
continuation is the whole encoding past the context's length.
tests/agreement/test_lm_eval_agreement.py runs lm-eval itself to prove the equality.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .data import LETTERS, Question

if TYPE_CHECKING:
    import numpy as np

TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"
CONTINUATIONS = tuple(TARGET_DELIMITER + letter for letter in LETTERS)


def description(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def question_text(q: Question) -> str:
    choices = "".join(f"\n{letter}. {choice}" for letter, choice in zip(LETTERS, q.choices))
    return f"{q.question.strip()}{choices}\nAnswer:"


def fewshot_text(examples: Sequence[tuple[str, str]]) -> str:
    """The few-shot block: each (question text, answer letter) as "<q> <letter>\n\n"."""
    return "".join(q + TARGET_DELIMITER + a + FEWSHOT_DELIMITER for q, a in examples)


@dataclass(frozen=True, eq=False)
class TokenRequest:
    """One log-likelihood request: score ``continuation`` after ``context`` (token ids).

    Either field may be a tuple of ints or an int32 array; the four requests of a question
    share one context object, which the engine turns into one input row without a copy."""

    context: Sequence[int] | np.ndarray
    continuation: Sequence[int] | np.ndarray


class LmEvalTokenizer:
    """Turns (context, continuation) strings into token requests the way lm-eval's HF backend does."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        prefix_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.prefix_token_id = prefix_id
        self.bos_text = tokenizer.decode(prefix_id) if prefix_id is not None else None

    def encode(self, text: str) -> list[int]:
        return self.encode_all([text])[0]

    def special(self, text: str) -> bool:
        """lm-eval's rule: default special tokens unless the text starts with the BOS text."""
        return self.bos_text is None or not text.startswith(self.bos_text)

    def encode_all(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode texts that start alike (same special-token rule) in one tokenizer call."""
        return self.tokenizer(list(texts), add_special_tokens=self.special(texts[0]))["input_ids"]

    def request(self, context_text: str, continuation_text: str) -> TokenRequest:
        if context_text == "":
            cont = self.tokenizer.encode(continuation_text, add_special_tokens=False)
            if self.prefix_token_id != cont[0]:
                return TokenRequest((self.prefix_token_id,), tuple(cont))
            return TokenRequest(tuple(cont[:1]), tuple(cont[1:]))
        n_spaces = len(context_text) - len(context_text.rstrip())
        if n_spaces:
            continuation_text = context_text[-n_spaces:] + continuation_text
            context_text = context_text[:-n_spaces]
        whole = self.encode(context_text + continuation_text)
        ctx = self.encode(context_text)
        return TokenRequest(tuple(ctx), tuple(whole[len(ctx) :]))
