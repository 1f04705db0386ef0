"""Requests built from shared pieces equal lm-eval's rule (``LmEvalTokenizer.request``) exactly.

Unit tests of the junctions (a tokenizer whose merges cross them must fall back and stay
identical), and every subject of real MMLU with two tokenizers on a sample: first and
last questions and every question that fell back. ``bench/build_requests.py --check``
compares every request of all of MMLU.
"""

from __future__ import annotations

import numpy as np
import pytest
from factories import real_mmlu_zip, save_llama_sentencepiece_tokenizer

from pytest_mmlu.mmlu.chat import PromptFormat, PromptRenderer
from pytest_mmlu.mmlu.prompts import CONTINUATIONS, LmEvalTokenizer
from pytest_mmlu.mmlu.requests import Group, RequestBuilder


def assert_lm_eval_rule(tokenizer, group: Group, requests, questions) -> None:
    rule = LmEvalTokenizer(tokenizer)
    width = len(group.continuations)
    for i in questions:
        for k, cont in enumerate(group.continuations):
            want = rule.request(group.contexts[i], cont)
            got = requests[width * i + k]
            assert got.context.tolist() == list(want.context), (i, k)
            assert got.continuation.tolist() == list(want.continuation), (i, k)


def merging_tokenizer(add_bos: bool):
    """Byte-level BPE with no pre-tokenizer split, whose merges 'B'+' z' -> 'B z' cross the
    junction of contexts '...Answer: B' + ' zq...' (and not of ' ab...')."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<s>": 0, **{ch: i + 1 for i, ch in enumerate(sorted(alphabet))}}
    vocab["Ġz"] = len(vocab)
    vocab["BĠz"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("Ġ", "z"), ("B", "Ġz")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<s>")


SHARED = "The following are multiple choice questions about merging.\n\nWhat is it?\nAnswer: B"


@pytest.mark.parametrize("add_bos", [False, True])
def test_a_junction_that_merges_falls_back_and_stays_identical(add_bos):
    tokenizer = merging_tokenizer(add_bos)
    own = [f" ab {i}\nAnswer:" for i in range(12)]
    own[5] = " zq 5\nAnswer:"  # not in the sample the junction is chosen on (0, 4, 8, 11)
    group = Group([SHARED + text for text in own], CONTINUATIONS)
    requests, stats = RequestBuilder(tokenizer).build([group])
    assert [i for i, _ in stats.fallbacks] == [5]  # 'B z' merged across the junction
    assert stats.split == 11
    assert_lm_eval_rule(tokenizer, group, requests, range(len(own)))


def test_a_junction_that_merges_on_the_sample_is_moved_earlier():
    """The cut before ' zq' merges in sampled questions: the cut before ' B' is taken instead,
    and then nothing merges across it."""
    tokenizer = merging_tokenizer(add_bos=True)
    own = [" zq one\nAnswer:", " ab two\nAnswer:", " zz three\nAnswer:", " ab four\nAnswer:"]
    group = Group([SHARED + text for text in own], CONTINUATIONS)
    requests, stats = RequestBuilder(tokenizer).build([group])
    assert stats.fallbacks == [] and stats.split == 4
    assert_lm_eval_rule(tokenizer, group, requests, range(len(own)))


def test_no_merge_no_fallback_and_one_context_array_per_question(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)  # byte-level BPE that adds BOS
    shared = "The following are multiple choice questions about alpha.\n\nalpha bravo?\nAnswer: A\n\n"
    group = Group([shared + f"{w} delta echo?\nAnswer:" for w in ("golf", "hotel", "india")], CONTINUATIONS)
    requests, stats = RequestBuilder(tokenizer).build([group])
    assert stats.fallback_count == 0 and stats.split == 3
    assert_lm_eval_rule(tokenizer, group, requests, range(3))
    for q in range(3):
        contexts = {id(r.context) for r in requests[4 * q : 4 * q + 4]}
        assert len(contexts) == 1  # one array shared by the four choices
        assert requests[4 * q].context.dtype == np.int32


def test_trailing_whitespace_moves_to_the_continuation(tiny_model_dir):
    """lm-eval's _encode_pair: a context ending in whitespace (a chat's 'assistant\\n') gives
    it to the continuation; the split path must do the same as the rule."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    shared = "system: the following are questions about alpha bravo.\nuser: "
    group = Group(
        [shared + f"{w} delta echo?\nassistant: \n" for w in ("golf", "hotel", "india")], ("A", "B", "C", "D")
    )
    requests, stats = RequestBuilder(tokenizer).build([group])
    assert stats.split == 3
    assert_lm_eval_rule(tokenizer, group, requests, range(3))


def _real_mmlu_sample_check(tokenizer, data, fmt: PromptFormat) -> None:
    from pytest_mmlu.mmlu.subjects import ALL_SUBJECTS

    renderer = PromptRenderer(fmt, tokenizer)
    groups = [
        Group(renderer.contexts(s, data.shots(s, 5), data.test_questions(s, None)), fmt.continuations)
        for s in ALL_SUBJECTS
    ]
    requests, stats = RequestBuilder(tokenizer).build(groups)
    fell_back = {i for i, _ in stats.fallbacks}
    assert stats.split + len(fell_back) == stats.questions == sum(len(g.contexts) for g in groups)
    first = 0
    for group in groups:
        n = len(group.contexts)
        sample = {0, 1, n - 1} | {i - first for i in fell_back if first <= i < first + n}
        assert_lm_eval_rule(tokenizer, group, requests[4 * first : 4 * (first + n)], sorted(sample))
        first += n


@pytest.mark.slow
def test_every_subject_of_real_mmlu_with_smollm2s_tokenizer(smollm2_dir):  # noqa: F811
    from transformers import AutoTokenizer

    from pytest_mmlu.mmlu.data import MmluData

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    data = MmluData(str(real_mmlu_zip()))
    _real_mmlu_sample_check(tokenizer, data, PromptFormat())
    _real_mmlu_sample_check(tokenizer, data, PromptFormat(chat_template=True, fewshot_as_multiturn=True))


@pytest.mark.slow
def test_every_subject_of_real_mmlu_with_a_sentencepiece_llama_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    from pytest_mmlu.mmlu.data import MmluData

    zip_path = real_mmlu_zip()
    tokenizer = AutoTokenizer.from_pretrained(save_llama_sentencepiece_tokenizer(tmp_path, zip_path))
    assert tokenizer("x")["input_ids"][0] == tokenizer.bos_token_id  # it adds BOS
    _real_mmlu_sample_check(tokenizer, MmluData(str(zip_path)), PromptFormat())
