"""Shared-prefix attention over packed suffixes.

A batch's suffixes (the questions after a shared few-shot prefix) are packed
end to end into one sequence: no padding at all.  In every layer the packed
queries attend (1) to the prefix keys and values, which are kept once for the
whole batch instead of copied per row, and (2) causally to their own row's
segment only; the two partial results are merged by their log-sum-exp.  That
is exactly softmax attention over [prefix, own suffix], up to float rounding.

On CPU both parts use torch's tiled flash-attention kernel, which returns the
log-sum-exp; elsewhere (and for logit softcapping) chunked matrix products.
It plugs into transformers as an attention implementation, switched on for one
forward by :func:`shared_prefix`.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch

NAME = "pytest_mmlu_shared_prefix"
# Transient score matrix per chunk in the portable path.
SCORE_CHUNK_BYTES = 8 * 2**20

_state = threading.local()


def _attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
               scaling: float | None = None, dropout: float = 0.0, softcap: float | None = None,
               **_: Any) -> tuple[Any, None]:
    """query [1, H, T, d], key/value [1, KVH, T, d]: suffixes packed end to end; -> [1, T, H, d]."""
    keys, values, segments = _state.current
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    group = query.shape[1] // key.shape[1]
    if group > 1:
        key, value = key.repeat_interleave(group, dim=1), value.repeat_interleave(group, dim=1)
    if query.device.type == "cpu" and softcap is None:
        part = _flash_cpu
    else:
        part = functools.partial(_portable, softcap=softcap)
    # Within the packed suffixes each token sees only its own row, causally ...
    heads, total, dim = query.shape[1:]
    out_s = query.new_empty((heads, total, dim), dtype=torch.float32)
    lse_s = query.new_empty((heads, total), dtype=torch.float32)
    for start, length in segments:
        sl = slice(start, start + length)
        out_s[:, sl], lse_s[:, sl] = part(query[0, :, sl], key[0, :, sl], value[0, :, sl], scale, causal=True)
    if keys is None:  # rows with no shared prefix: packing alone
        return out_s.to(query.dtype).transpose(0, 1).unsqueeze(0), None
    # ... and every packed token sees the whole shared prefix.
    prefix_k = keys[module.layer_idx][0]  # [KVH, P, d]
    prefix_v = values[module.layer_idx][0]
    if group > 1:
        prefix_k, prefix_v = prefix_k.repeat_interleave(group, 0), prefix_v.repeat_interleave(group, 0)
    out_p, lse_p = part(query[0], prefix_k, prefix_v, scale, causal=False)
    top = torch.maximum(lse_p, lse_s)
    w_p = (lse_p - top).exp_().unsqueeze(-1)
    w_s = (lse_s - top).exp_().unsqueeze(-1)
    out = (out_p * w_p + out_s * w_s) / (w_p + w_s)
    return out.to(query.dtype).transpose(0, 1).unsqueeze(0), None


def _flash_cpu(q: Any, k: Any, v: Any, scale: float, causal: bool) -> tuple[Any, Any]:
    """torch's tiled CPU flash kernel, which also returns the log-sum-exp of each query."""
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q[None], k[None], v[None], 0.0, causal, scale=scale)
    return out[0].float(), lse[0].float()


def _portable(q: Any, k: Any, v: Any, scale: float, causal: bool, softcap: float | None) -> tuple[Any, Any]:
    """Plain matrix products in chunks of queries (any device; logit softcapping)."""
    heads, n_q, _ = q.shape
    n_k = k.shape[1]
    rows = max(1, SCORE_CHUNK_BYTES // (heads * n_k * 4))
    out = q.new_empty(q.shape, dtype=torch.float32)
    lse = q.new_empty((heads, n_q), dtype=torch.float32)
    for start in range(0, n_q, rows):
        qc = q[:, start:start + rows]
        scores = torch.matmul(qc, k.transpose(1, 2)).float().mul_(scale)
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        if causal:
            i = torch.arange(start, start + qc.shape[1], device=q.device)[:, None]
            scores.masked_fill_(torch.arange(n_k, device=q.device)[None, :] > i, float("-inf"))
        chunk_lse = torch.logsumexp(scores, dim=-1)
        probs = scores.sub_(chunk_lse.unsqueeze(-1)).exp_()
        out[:, start:start + qc.shape[1]] = torch.matmul(probs.to(v.dtype), v).float()
        lse[:, start:start + qc.shape[1]] = chunk_lse
    return out, lse


def register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, _attention)


def supported(model: Any) -> bool:
    """Every attention module must know its layer index (to find its prefix K/V)."""
    layers = [m for name, m in model.named_modules() if name.endswith(("self_attn", ".attn", ".attention"))]
    return bool(layers) and all(isinstance(getattr(m, "layer_idx", None), int) for m in layers)


@contextlib.contextmanager
def shared_prefix(model: Any, keys: Sequence[Any] | None, values: Sequence[Any] | None,
                  segments: Sequence[tuple[int, int]]) -> Iterator[None]:
    """Run the model's attention as shared-prefix attention over packed suffixes
    (``segments``: (start, length) of each row; ``keys`` None: no prefix) for one forward."""
    config = model.config
    previous = config._attn_implementation
    _state.current = (keys, values, segments)
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = previous
        _state.current = None
