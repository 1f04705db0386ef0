"""Shared-prefix attention composed from a plain attention kernel that returns the log-sum-exp:
each packed row causally over its own segment, then every prefix piece without repeating its
keys per query head, merged by log-sum-exp.  Exactly softmax attention over [prefix, own
suffix], up to float rounding.  Used by the backends that have no fused mask (CPU flash,
portable)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

# part(q [H, Tq, d], k [H', Tk, d], v, scale, causal) -> (out [H, Tq, d] fp32, lse [H, Tq] fp32)
Part = Callable[..., tuple[Any, Any]]


def attend(
    part: Part,
    q: Any,
    k: Any,
    v: Any,
    piece_ks: Sequence[Any],
    piece_vs: Sequence[Any],
    segments: Sequence[tuple[int, int]],
    scale: float,
) -> Any:
    """q [H, T, d], k/v [KVH, T, d] (packed suffixes), pieces [KVH, P_i, d] -> out [H, T, d] fp32."""
    group = q.shape[0] // k.shape[0]
    # Within the packed suffixes each token sees only its own row, causally ...
    if group > 1:
        k, v = k.repeat_interleave(group, dim=0), v.repeat_interleave(group, dim=0)
    heads, total, dim = q.shape
    out = q.new_empty((heads, total, dim), dtype=torch.float32)
    lse = q.new_empty((heads, total), dtype=torch.float32)
    for start, length in segments:
        sl = slice(start, start + length)
        out[:, sl], lse[:, sl] = part(q[:, sl], k[:, sl], v[:, sl], scale, causal=True)
    # ... and every packed token sees every piece of the shared prefix.
    for piece_k, piece_v in zip(piece_ks, piece_vs):
        out, lse = merge(out, lse, *grouped(part, q, piece_k, piece_v, scale))
    return out


def grouped(part: Part, q: Any, k: Any, v: Any, scale: float) -> tuple[Any, Any]:
    """Non-causal attention of q [H, T, d] to k/v [KVH, P, d] without repeating k and v:
    the query heads that share a key head are stacked into one longer query block."""
    heads, total, dim = q.shape
    kv_heads = k.shape[0]
    out, lse = part(q.reshape(kv_heads, heads // kv_heads * total, dim), k, v, scale, causal=False)
    return out.reshape(heads, total, dim), lse.reshape(heads, total)


def merge(out_a: Any, lse_a: Any, out_b: Any, lse_b: Any) -> tuple[Any, Any]:
    """Softmax attention over the union of two key sets, from each part's output and LSE."""
    top = torch.maximum(lse_a, lse_b)
    w_a = (lse_a - top).exp_()
    w_b = (lse_b - top).exp_()
    norm = w_a + w_b
    out = out_a.mul_((w_a / norm).unsqueeze(-1)).add_(out_b.mul_((w_b / norm).unsqueeze(-1)))
    return out, top.add_(norm.log_())
