"""Requests -> unique input rows -> a tree of shared token prefixes.

Rows are int32 arrays (4 bytes a token, the four choices of a question share
one), never tuples of Python ints: all of MMLU 5-shot is 14,042 rows of about
700 tokens, 40 MB as arrays and over half a GiB as tuples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_SHARED_PREFIX = 32  # tokens; below this a separate prefix pass costs more than it saves


@dataclass
class Row:
    """One unique model input: every request whose (context + continuation)[:-1] it is."""

    tokens: np.ndarray  # int32
    scored: int  # number of trailing positions whose logits are needed
    targets: list[tuple[int, np.ndarray]]  # (request index, continuation tokens)


@dataclass
class Node:
    """A shared prefix: rows scored right after it, and longer shared prefixes below it."""

    prefix_len: int
    tokens: np.ndarray  # the prefix itself
    rows: list[Row]
    children: list[Node]

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()

    def held_tokens(self, shared: bool, above: int = 0) -> dict[int, int]:
        """Prefix tokens whose keys and values are held while each node's rows run (by node id):
        shared attention keeps each piece once; a model's own cache copies its parent's."""
        held = {id(self): self.prefix_len + (0 if shared else above)}
        for child in self.children:
            held.update(child.held_tokens(shared, held[id(self)]))
        return held


def as_tokens(seq: Any) -> np.ndarray:
    """Token ids as an int32 array, without a copy when they already are one."""
    if isinstance(seq, np.ndarray) and seq.dtype == np.int32:
        return seq
    return np.asarray(seq, dtype=np.int32)


def build_rows(requests: Sequence[Any], max_length: int) -> list[Row]:
    """lm-eval's input of each request, ``(context + continuation)[-(max_length + 1):][:-1]``,
    deduplicated: requests with the same input share a row and differ only in targets."""
    by_input: dict[tuple[int, int], list[Row]] = {}  # (length, hash) -> rows: a hash, not the bytes
    rows: list[Row] = []
    last_context: Any = None
    last_row: Row | None = None
    for index, req in enumerate(requests):
        cont = as_tokens(req.continuation)
        if not len(cont):
            raise ValueError(f"request {index}: empty continuation")
        if len(cont) > max_length:
            raise ValueError(f"request {index}: continuation longer than max_length {max_length}")
        if req.context is last_context and len(cont) == 1 and last_row is not None:
            row = last_row  # another choice of the same question: same input, no hashing
        else:
            ctx = as_tokens(req.context)
            if len(cont) == 1 and len(ctx) <= max_length:
                tokens = ctx  # the input is the context itself: no copy
            else:
                tokens = np.concatenate([ctx, cont])[-(max_length + 1) :][:-1]
            key = (len(tokens), hash(tokens.tobytes()))
            found = next((r for r in by_input.get(key, ()) if np.array_equal(r.tokens, tokens)), None)
            if found is None:
                found = Row(tokens, len(cont), [])
                by_input.setdefault(key, []).append(found)
                rows.append(found)
            row = found
        row.scored = max(row.scored, len(cont))
        row.targets.append((index, cont))
        last_context, last_row = (req.context, row) if len(cont) == 1 else (None, None)
    return rows


def _order_key(row: Row) -> bytes:
    # Big-endian bytes sort like the token sequence itself (a prefix first), at C speed.
    return row.tokens.astype(">u4").tobytes()


def common_prefix(a: np.ndarray, b: np.ndarray, limit: int) -> int:
    n = min(len(a), len(b), limit)
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


def flat(rows: list[Row]) -> Node:
    """All rows at the root: no shared prefix (plain batches)."""
    return Node(0, np.zeros(0, dtype=np.int32), rows, [])


def build_tree(rows: list[Row], base: int = 0) -> Node:
    """The prefix tree of rows that all share ``tokens[:base]``.

    Consecutive rows (in sorted order) sharing at least MIN_SHARED_PREFIX more tokens form
    a child whose prefix runs once, on top of this node's (a subject's few-shot block, then
    a reading passage several questions share); the other rows are scored at this node.
    """
    rows = sorted(rows, key=_order_key)
    direct: list[Row] = []
    children: list[Node] = []
    current: list[Row] = []
    shared = 0

    def close() -> None:
        if len(current) > 1 and shared >= base + MIN_SHARED_PREFIX:
            children.append(build_tree(current, shared))
        else:
            direct.extend(current)

    for row in rows:
        room = len(row.tokens) - row.scored  # scored positions must stay in the suffix
        if current:
            common = common_prefix(current[-1].tokens, row.tokens, room)
            if min(shared, common) >= base + MIN_SHARED_PREFIX:
                current.append(row)
                shared = min(shared, common)
                continue
            close()
        current, shared = [row], room
    if current:
        close()
    prefix = rows[0].tokens[:base] if rows else np.zeros(0, dtype=np.int32)
    return Node(base, prefix, direct, children)
