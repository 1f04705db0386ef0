"""Token requests for many questions at once, identical to lm-eval's rule, in seconds.

lm-eval's rule (``prompts.LmEvalTokenizer.request``) encodes, for each of the four
choices, the whole string ``context + continuation`` and the context separately: five
encodings of a ~3,000-character string per question, 150 s for all of MMLU 5-shot.
Here the questions of one group (a subject) are split where their shared text ends:

1. The shared piece ``P`` (description and few-shot examples, or the rendered chat up to
   the test question) is encoded once per group, with offsets.
2. Each question's own part is encoded, in one batched call per group (fast tokenizers
   encode a batch in parallel), behind an *anchor*: the last tokens of ``P``, whose text
   encodes alone to the same tokens. The window's first tokens must reproduce the
   anchor; if they do, no merge crossed the junction, and the context is
   ``encode(P) + window[len(anchor):]``.
3. The continuations: the context's tail from its last space (``" 4\\nAnswer:"``) is
   encoded with and without each continuation, once per distinct tail; it must
   reproduce the context's last tokens and be a prefix of the tail-with-continuation.

A junction that does not verify falls back to lm-eval's full encodings for that question
(batched, counted in :class:`BuildStats`), never to a guess. The split is exact for
tokenizers whose output near a junction depends only on the text within the anchor
(pre-tokenizers split at spaces, punctuation and special tokens; merges stay inside a
pre-token); ``bench/build_requests.py --check`` compares every request of all of MMLU
with the full encodings.

Each question's context is one int32 array, shared (the same object) by its four
requests; continuations are small int32 arrays shared by every question whose tail and
choice are alike.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .prompts import LmEvalTokenizer, TokenRequest

MIN_ANCHOR_CHARS = 16  # an anchor this long spans a whole "Answer: B"-like line end
ANCHOR_TRIES = 4  # candidate anchors tried per junction
JUNCTION_TRIES = 3  # junctions tried per group (each on a sample of its questions)


@dataclass
class BuildStats:
    """How a build went: questions split at their junctions, and those encoded in full."""

    questions: int = 0
    split: int = 0
    fallbacks: list[tuple[int, str]] = field(default_factory=list)  # (question number, why)

    @property
    def fallback_count(self) -> int:
        return len(self.fallbacks)


@dataclass(frozen=True)
class Group:
    """Questions whose contexts share a long prefix (one subject), and the four continuations."""

    contexts: Sequence[str]
    continuations: Sequence[str]


def _int32(ids: Sequence[int] | np.ndarray) -> np.ndarray:
    return np.asarray(ids, dtype=np.int32)


class RequestBuilder:
    """Builds lm-eval's token requests for groups of questions, sharing the common work."""

    def __init__(self, tokenizer: Any) -> None:
        self.rule = LmEvalTokenizer(tokenizer)
        self.tokenizer = tokenizer
        # Slow (pure Python) tokenizers have no offsets and no parallel batches.
        self.fast = bool(getattr(tokenizer, "is_fast", False))
        # The batch is split over threads by the Rust side; a forked worker disables it.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

    # -- encodings --------------------------------------------------------------------------------
    def _plain(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]

    # -- building ---------------------------------------------------------------------------------
    def build(self, groups: Sequence[Group]) -> tuple[list[TokenRequest], BuildStats]:
        """Requests of every question of every group, in order (four per question, A-D)."""
        stats = BuildStats()
        requests: list[TokenRequest] = []
        for group in groups:
            requests.extend(self._build_group(group, stats))
        return requests, stats

    def _build_group(self, group: Group, stats: BuildStats) -> list[TokenRequest]:
        n, width = len(group.contexts), len(group.continuations)
        first = stats.questions
        stats.questions += n
        # Trailing whitespace of the context moves to the continuation (lm-eval's _encode_pair).
        contexts = [c.rstrip() for c in group.contexts]
        moved = [c[len(s) :] for c, s in zip(group.contexts, contexts)]
        contexts_ids: list[np.ndarray | None] = [None] * n
        refused = self._split_contexts(contexts, contexts_ids)
        attempted = any(ids is not None for ids in contexts_ids) or refused is not None
        cont_ids = self._continuations(contexts, moved, group.continuations, contexts_ids)
        requests: list[TokenRequest | None] = [None] * (width * n)
        in_full: list[int] = []
        for i in range(n):
            ctx, conts = contexts_ids[i], cont_ids[i]
            if ctx is None or conts is None:
                in_full.append(i)
                if attempted:
                    reason = refused or (
                        "the shared piece/question junction did not verify"
                        if ctx is None
                        else "the context/continuation junction did not verify"
                    )
                    stats.fallbacks.append((first + i, reason))
                continue
            for k, cont in enumerate(conts):
                requests[width * i + k] = TokenRequest(ctx, cont)
        self._encode_in_full(contexts, moved, group.continuations, in_full, requests)
        stats.split += n - len(in_full)
        return requests  # type: ignore[return-value]

    def _split_contexts(self, contexts: list[str], out: list[np.ndarray | None]) -> str | None:
        """Fill ``out[i]`` with the context's tokens wherever the shared piece and the question's
        own part verify at their junction; return why none could be split, if so."""
        if len(contexts) < 2:
            return None  # nothing shared: encoded in full, not a fallback
        if not self.fast:
            return "slow tokenizer (no offsets, no parallel batches)"
        shared = os.path.commonprefix(contexts)
        sample = sorted({0, len(contexts) // 3, 2 * len(contexts) // 3, len(contexts) - 1})
        refused, chosen = None, None
        for junction in self._junctions(shared):
            split = self._prepare(shared[:junction])
            if isinstance(split, str):
                refused = split
                continue
            chosen = (junction, split)
            if all(ids is not None for ids in self._windows(contexts, sample, junction, split)):
                break  # this junction verifies on the sample: take it for every question
        if chosen is None:
            return refused
        junction, split = chosen
        out[:] = self._windows(contexts, range(len(contexts)), junction, split)
        return None

    @staticmethod
    def _junctions(shared: str) -> list[int]:
        """Where to cut the shared text, best first: before the whitespace that ends it
        ("...Answer: B|\\n\\nQ..."; a word the questions only begin alike is dropped), then
        before each earlier whitespace run ("...Answer:| B"): spaces and line breaks attach to
        the word after them in byte-level and SentencePiece tokenizers alike."""
        cuts: list[int] = []
        end = len(shared)
        while len(cuts) < JUNCTION_TRIES:
            while end > 0 and not shared[end - 1].isspace():
                end -= 1
            end = len(shared[:end].rstrip())
            if end < MIN_ANCHOR_CHARS:
                break
            cuts.append(end)
        return cuts

    def _prepare(self, piece: str) -> tuple[np.ndarray, str, list[int]] | str:
        """(tokens of the piece before its anchor, the anchor's text, the anchor's tokens), or
        why the piece cannot be split."""
        if len(piece) < len(self.rule.bos_text or ""):
            return "the shared piece is shorter than the BOS text (lm-eval's BOS rule)"
        with_special = self.tokenizer(piece, add_special_tokens=self.rule.special(piece))["input_ids"]
        plain = self.tokenizer(piece, add_special_tokens=False, return_offsets_mapping=True)
        piece_ids, offsets = plain["input_ids"], plain["offset_mapping"]
        lead = len(with_special) - len(piece_ids)
        if lead < 0 or with_special[lead:] != piece_ids:
            return "special tokens are not a fixed prefix (e.g. an EOS appended)"
        anchor = self._anchor(piece, piece_ids, offsets)
        if anchor is None:
            return "no anchor of the shared piece encodes alone as it does in place"
        start, anchor_ids = anchor
        return _int32(with_special[: len(with_special) - len(anchor_ids)]), piece[start:], anchor_ids

    def _windows(
        self, contexts: list[str], which: Sequence[int], junction: int, split: tuple[np.ndarray, str, list[int]]
    ) -> list[np.ndarray | None]:
        """The contexts' tokens from the piece and each window (anchor + the question's own
        text), or None where the window does not begin with the anchor's own tokens."""
        base, anchor_text, anchor_ids = split
        m = len(anchor_ids)
        result: list[np.ndarray | None] = []
        for ids in self._plain([anchor_text + contexts[i][junction:] for i in which]):
            if ids[:m] != anchor_ids:
                result.append(None)
                continue
            ctx = np.empty(len(base) + len(ids), dtype=np.int32)
            ctx[: len(base)] = base
            ctx[len(base) :] = ids
            result.append(ctx)
        return result

    def _anchor(self, piece: str, ids: list[int], offsets: list[tuple[int, int]]) -> tuple[int, list[int]] | None:
        """(start character, tokens) of a tail of ``piece`` that starts at a token boundary and
        at a space, spans at least MIN_ANCHOR_CHARS, and encodes alone to ``ids``' own tail."""
        tries = 0
        for t in range(len(ids) - 1, 0, -1):
            start = offsets[t][0]
            if len(piece) - start < MIN_ANCHOR_CHARS or piece[start] != " ":
                continue
            tries += 1
            if self._plain([piece[start:]])[0] == ids[t:]:
                return start, ids[t:]
            if tries >= ANCHOR_TRIES:
                break
        return None

    def _continuations(
        self, contexts: list[str], moved: list[str], continuations: Sequence[str], contexts_ids: list[np.ndarray | None]
    ) -> list[list[np.ndarray] | None]:
        """Each question's continuation tokens, from a tail of its context encoded with and
        without each continuation. Tails tried: from the last line break (``"\\nAnswer:"``, the
        same for every question), then from the last space (tokenizers that prepend a "▁" to a
        string that does not start with one); each distinct tail is encoded once."""
        result: list[list[np.ndarray] | None] = [None] * len(contexts)
        for cut in ("\n", " "):
            keys: dict[int, tuple[str, str]] = {}
            for i, ctx in enumerate(contexts):
                if contexts_ids[i] is not None and result[i] is None:
                    at = ctx.rfind(cut)
                    if at > 0:
                        keys[i] = (ctx[at:], moved[i])
            found = self._encode_tails(sorted(set(keys.values())), continuations)
            for i, key in keys.items():
                hit, ctx_ids = found[key], contexts_ids[i]
                if hit is None or ctx_ids is None:  # keys hold encoded contexts only
                    continue
                tail_ids, conts = hit
                m = len(tail_ids)
                if len(ctx_ids) >= m and np.array_equal(ctx_ids[len(ctx_ids) - m :], tail_ids):
                    result[i] = conts
        return result

    def _encode_tails(
        self, tails: list[tuple[str, str]], continuations: Sequence[str]
    ) -> dict[tuple[str, str], tuple[np.ndarray, list[np.ndarray]] | None]:
        """(tail, moved whitespace) -> (tail tokens, continuation tokens), or None where a
        continuation merged into the tail."""
        width = 1 + len(continuations)
        texts = [t for tail, ws in tails for t in (tail, *(tail + ws + c for c in continuations))]
        encoded = self._plain(texts) if texts else []
        found: dict[tuple[str, str], tuple[np.ndarray, list[np.ndarray]] | None] = {}
        for j, key in enumerate(tails):
            tail_ids, *wholes = encoded[width * j : width * (j + 1)]
            m = len(tail_ids)
            ok = m > 0 and all(len(w) > m and w[:m] == tail_ids for w in wholes)
            found[key] = (_int32(tail_ids), [_int32(w[m:]) for w in wholes]) if ok else None
        return found

    def _encode_in_full(
        self,
        contexts: list[str],
        moved: list[str],
        continuations: Sequence[str],
        which: list[int],
        out: list[TokenRequest | None],
    ) -> None:
        """lm-eval's rule itself for these questions (contexts stripped, their trailing
        whitespace in ``moved``): the context and the four wholes, batched."""
        if not which:
            return
        width = len(continuations)
        by_special: dict[bool, list[tuple[int, int, str]]] = {}
        for i in which:
            ctx = contexts[i]
            if not ctx:
                for k, cont in enumerate(continuations):
                    req = self.rule.request(moved[i], cont)
                    out[width * i + k] = TokenRequest(_int32(req.context), _int32(req.continuation))
                continue
            for k, t in enumerate((ctx, *(ctx + moved[i] + c for c in continuations))):
                by_special.setdefault(self.rule.special(t), []).append((i, k, t))
        encoded: dict[tuple[int, int], list[int]] = {}
        for special, items in by_special.items():
            ids = self.tokenizer([t for _, _, t in items], add_special_tokens=special, return_attention_mask=False)[
                "input_ids"
            ]
            encoded.update({(i, k): e for (i, k, _), e in zip(items, ids)})
        for i in which:
            if (i, 0) not in encoded:
                continue
            context_ids = _int32(encoded[(i, 0)])
            for k in range(width):
                out[width * i + k] = TokenRequest(context_ids, _int32(encoded[(i, k + 1)][len(context_ids) :]))
