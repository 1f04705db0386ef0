"""CUDA: one FlexAttention call per layer per batch.

The prefix pieces and the packed suffixes form one key sequence [prefix | suffixes];
a query sees every prefix key and, causally, the keys of its own segment (a
document-causal mask shifted by the prefix length).  Grouped-query heads use
``enable_gqa`` (keys never repeated per head); logit softcapping is a score_mod.

The block mask is built from the segment boundaries directly (``block_mask``), not by
evaluating the mask on every (query, key) pair: a 65,536-token batch would need a
4-billion-entry grid.  A query block sees keys [0, P) and [P + start of its first
query's segment, P + its last query], a contiguous range, so each key block's state
(none, partial, full) follows from four comparisons.

Compiled on CUDA (dynamic shapes: every batch has its own length); eager elsewhere,
which is how the CPU tests check this module's masks against a float64 truth.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch

PRIORITY = 30
BLOCK = 128  # FlexAttention's default block size, queries and keys


def available() -> bool:
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:  # pragma: no cover - torch without FlexAttention
        return False
    return True


def accepts(query: Any, softcap: float | None) -> bool:
    return query.device.type == "cuda" and available()


@functools.cache
def _compiled() -> Any:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=True)


def _flex(device: Any) -> Any:
    if device.type == "cuda":
        return _compiled()
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention


def segment_ids(segments: Sequence[tuple[int, int]], total: int, device: Any) -> tuple[Any, Any]:
    """Per packed position: its segment's index and its segment's first position."""
    lengths = torch.tensor([n for _, n in segments], device=device)
    starts = torch.tensor([s for s, _ in segments], device=device)
    doc = torch.repeat_interleave(torch.arange(len(segments), device=device), lengths, output_size=total)
    return doc, starts[doc]


def block_mask(segments: Sequence[tuple[int, int]], total: int, prefix: int, device: Any, block: int = BLOCK) -> Any:
    """The BlockMask of [prefix | packed suffixes] attention for ``total`` packed queries."""
    return _block_mask(tuple(segments), total, prefix, device, block)


@functools.lru_cache(maxsize=4)  # built once per forward, not once per layer
def _block_mask(segments: tuple[tuple[int, int], ...], total: int, prefix: int, device: Any, block: int) -> Any:
    from torch.nn.attention.flex_attention import BlockMask

    doc, first = segment_ids(segments, total, device)

    def mask_mod(b: Any, h: Any, q: Any, kv: Any) -> Any:
        own = (kv - prefix).clamp(min=0)
        return (kv < prefix) | ((doc[q] == doc[own]) & (own <= q) & (kv >= prefix))

    keys = prefix + total
    n_q, n_kv = -(-total // block), -(-keys // block)
    q_lo = torch.arange(n_q, device=device) * block
    q_hi = torch.clamp(q_lo + block, max=total) - 1
    kv_lo = torch.arange(n_kv, device=device) * block
    kv_hi = torch.clamp(kv_lo + block, max=keys) - 1
    q_lo, q_hi, kv_lo, kv_hi = q_lo[:, None], q_hi[:, None], kv_lo[None, :], kv_hi[None, :]
    # Suffix part of a key block, in packed positions (empty when the block is all prefix).
    s_lo, s_hi = (kv_lo - prefix).clamp(min=0), kv_hi - prefix
    has_suffix = kv_hi >= prefix
    seen_from = first[q_lo.squeeze(1)][:, None]  # first key a query block sees in the suffixes
    any_suffix = has_suffix & (s_lo <= q_hi) & (s_hi >= seen_from)
    any_seen = (kv_lo < prefix) | any_suffix
    # Full: all prefix, or every query of the block sees every suffix key of it (one segment,
    # causal) and so every prefix key it may hold too.
    same_segment = doc[s_lo.expand(n_q, n_kv)] == doc[q_hi.expand(n_q, n_kv)]
    full_suffix = has_suffix & (s_hi <= q_lo) & same_segment
    full = (kv_hi < prefix) | full_suffix
    partial = any_seen & ~full

    def as_blocks(flags: Any) -> tuple[Any, Any]:
        counts = flags.sum(dim=1, dtype=torch.int32)
        order = torch.argsort(flags.to(torch.int8), dim=1, descending=True, stable=True).to(torch.int32)
        return counts[None, None], order[None, None]

    kv_num, kv_idx = as_blocks(partial)
    full_num, full_idx = as_blocks(full)
    return BlockMask.from_kv_blocks(
        kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block, mask_mod=mask_mod, seq_lengths=(total, keys)
    )


@functools.cache  # one function per cap: a new closure per call could make the compiled kernel recompile
def _softcapping(softcap: float) -> Any:
    def score_mod(score: Any, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        return torch.tanh(score / softcap) * softcap

    return score_mod


def attend(
    q: Any,
    k: Any,
    v: Any,
    piece_ks: Sequence[Any],
    piece_vs: Sequence[Any],
    segments: Sequence[tuple[int, int]],
    scale: float,
    softcap: float | None,
) -> Any:
    prefix = sum(p.shape[1] for p in piece_ks)
    keys = torch.cat([*piece_ks, k], dim=1) if piece_ks else k
    values = torch.cat([*piece_vs, v], dim=1) if piece_vs else v
    mask = block_mask(segments, q.shape[1], prefix, q.device)
    score_mod = None if softcap is None else _softcapping(softcap)
    out = _flex(q.device)(
        q[None],
        keys[None],
        values[None],
        score_mod=score_mod,
        block_mask=mask,
        scale=scale,
        enable_gqa=q.shape[0] != k.shape[0],
    )
    return out[0]
