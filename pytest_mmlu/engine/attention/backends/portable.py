"""Any device, any dtype, logit softcapping: chunked matrix products (the fallback)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch

from .. import compose

PRIORITY = 0  # the last resort: accepts everything
SCORE_CHUNK_BYTES = 8 * 2**20  # transient score matrix per chunk


def accepts(query: Any, softcap: float | None) -> bool:
    return True


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
    return compose.attend(functools.partial(part, softcap=softcap), q, k, v, piece_ks, piece_vs, segments, scale)


def part(q: Any, k: Any, v: Any, scale: float, causal: bool, softcap: float | None = None) -> tuple[Any, Any]:
    """Plain matrix products in chunks of queries: (out fp32, log-sum-exp fp32)."""
    heads, n_q, _ = q.shape
    n_k = k.shape[1]
    rows = max(1, SCORE_CHUNK_BYTES // (heads * n_k * 4))
    out = q.new_empty(q.shape, dtype=torch.float32)
    lse = q.new_empty((heads, n_q), dtype=torch.float32)
    for start in range(0, n_q, rows):
        # Scaled before the product: fp16 q.k can pass 65504 where q.k * scale does not.
        qc = q[:, start : start + rows] * scale
        scores = torch.matmul(qc, k.transpose(1, 2)).float()
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        if causal:
            i = torch.arange(start, start + qc.shape[1], device=q.device)[:, None]
            scores.masked_fill_(torch.arange(n_k, device=q.device)[None, :] > i, float("-inf"))
        chunk_lse = torch.logsumexp(scores, dim=-1)
        probs = scores.sub_(chunk_lse.unsqueeze(-1)).exp_()
        out[:, start : start + qc.shape[1]] = torch.matmul(probs.to(v.dtype), v).float()
        lse[:, start : start + qc.shape[1]] = chunk_lse
    return out, lse
