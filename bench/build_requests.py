"""All of MMLU 5-shot as lm-eval's token requests: the old way and the new way, side by side.

    python bench/build_requests.py            # SmolLM2's tokenizer: old way, new way, timings
    python bench/build_requests.py --check    # and every request compared, with two tokenizers

The old way (pytest-mmlu up to 1eedaa9, ``LmEvalTokenizer.mmlu_requests``): per question,
one tokenizer call on the five full strings (the context and context + " A".." D"),
requests as tuples of Python ints. It is lm-eval's rule itself (``_encode_pair`` of the
HF backend; MMLU contexts end in "Answer:", so no whitespace moves), which is why
``--check`` uses it as the reference for every request of all 57 subjects, with
SmolLM2-135M-Instruct's tokenizer (byte-level BPE) and a SentencePiece-style llama
tokenizer that adds BOS (``tests/factories.py``, trained here on MMLU's dev questions).

The new way: ``Evaluator.requests`` (``pytest_mmlu/mmlu/requests.py``): each subject's shared
text encoded once, the questions' own parts in one batched call per subject.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from w5_bench import data_path, model_path  # noqa: E402

from pytest_mmlu.mmlu import prompts
from pytest_mmlu.mmlu.chat import PromptFormat, PromptRenderer
from pytest_mmlu.mmlu.data import MmluData
from pytest_mmlu.mmlu.requests import Group, RequestBuilder
from pytest_mmlu.mmlu.subjects import ALL_SUBJECTS

SHOTS = 5


def groups_of(data: MmluData, tokenizer, fmt: PromptFormat) -> list[Group]:
    renderer = PromptRenderer(fmt, tokenizer)
    return [
        Group(renderer.contexts(s, data.shots(s, SHOTS), data.test_questions(s, None)), fmt.continuations)
        for s in ALL_SUBJECTS
    ]


def old_way(tokenizer, groups: list[Group]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """lm-eval's rule, one question at a time (the code before this change, generalised to
    move a context's trailing whitespace into the continuation as _encode_pair does)."""
    rule = prompts.LmEvalTokenizer(tokenizer)
    out = []
    for group in groups:
        for text in group.contexts:
            ctx_text = text.rstrip()
            moved = text[len(ctx_text) :]
            ctx, *wholes = rule.encode_all([ctx_text, *(ctx_text + moved + c for c in group.continuations)])
            out.extend((tuple(ctx), tuple(w[len(ctx) :])) for w in wholes)
    return out


def tuple_bytes(requests) -> int:
    """What the old requests held: the tuples and an int object per id above the small-int cache."""
    total = 0
    for ctx, cont in requests:
        for ids in (ctx, cont):
            total += sys.getsizeof(ids) + 28 * sum(1 for t in ids if t > 256)
    return total


def array_bytes(requests) -> int:
    seen: dict[int, int] = {}
    for r in requests:
        for a in (r.context, r.continuation):
            seen[id(a)] = a.nbytes + 112  # data + the ndarray object
    return sum(seen.values()) + len(requests) * 56  # + each TokenRequest


def run(name: str, tokenizer, data: MmluData, check: bool, fmt: PromptFormat) -> bool:
    start = time.perf_counter()
    groups = groups_of(data, tokenizer, fmt)
    texts_s = time.perf_counter() - start
    start = time.perf_counter()
    new, stats = RequestBuilder(tokenizer).build(groups)
    new_s = time.perf_counter() - start
    n_tokens = sum(len(r.context) + len(r.continuation) for r in new)
    print(
        f"[{name}] prompts: {sum(len(g.contexts) for g in groups)} questions, {len(new)} requests, "
        f"{n_tokens / 1e6:.1f} M request tokens; prompt text {texts_s:.2f} s"
    )
    print(
        f"[{name}] new way: {new_s:.2f} s (+ {texts_s:.2f} s prompt text), {stats.split} questions split, "
        f"{stats.fallback_count} fell back to full encoding; requests hold {array_bytes(new) / 2**20:.0f} MiB"
    )
    if not check and name != "smollm2":
        return True
    start = time.perf_counter()
    old = old_way(tokenizer, groups)
    old_s = time.perf_counter() - start
    print(
        f"[{name}] old way: {old_s:.2f} s (+ {texts_s:.2f} s prompt text); requests hold "
        f"{tuple_bytes(old) / 2**20:.0f} MiB as tuples"
    )
    if not check:
        return True
    bad = [
        i
        for i, (r, (ctx, cont)) in enumerate(zip(new, old))
        if not (np.array_equal(r.context, ctx) and np.array_equal(r.continuation, cont))
    ]
    print(
        f"[{name}] check: {len(old) - len(bad)} of {len(old)} requests identical to lm-eval's rule"
        + (f"; first differing request {bad[0]}" if bad else "")
    )
    return not bad and len(old) == len(new)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare every request, two tokenizers")
    parser.add_argument("--chat", action="store_true", help="SmolLM2's chat template, few-shot as multiturn")
    parser.add_argument("--data", default=data_path())
    args = parser.parse_args()
    from factories import save_llama_sentencepiece_tokenizer
    from transformers import AutoTokenizer

    data = MmluData(args.data)
    for s in ALL_SUBJECTS:  # read the data before any clock
        data.split(s, "dev"), data.split(s, "test")
    fmt = PromptFormat(chat_template=True, fewshot_as_multiturn=True) if args.chat else PromptFormat()
    ok = run("smollm2", AutoTokenizer.from_pretrained(model_path()), data, args.check, fmt)
    if args.check and not args.chat:
        with tempfile.TemporaryDirectory() as tmp:
            folder = save_llama_sentencepiece_tokenizer(Path(tmp), Path(args.data))
            ok = run("llama-sp-bos", AutoTokenizer.from_pretrained(folder), data, True, fmt) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
