"""Shared-prefix attention over packed suffixes.

A batch's suffixes (the questions after a shared few-shot prefix) are packed
end to end into one sequence: no padding at all.  In every layer the packed
queries attend (1) causally to their own row's segment only and (2) to each
piece of the shared prefix (a subject's few-shot block, then a reading passage
several questions share), whose keys and values are kept once for the whole
batch, never copied per row or per piece; the partial results are merged by
their log-sum-exp.  That is exactly softmax attention over [prefix, own
suffix], up to float rounding.  A prefix is itself run this way, one chunk at
a time, and its keys and values are captured for the batches that follow.

How is a backend's business (``backends/``, one module each): on CUDA one fused
FlexAttention call per layer; on CPU torch's tiled flash kernel per segment and
prefix piece, merged by log-sum-exp (``compose.py``); elsewhere, and for logit
softcapping off CUDA, chunked matrix products.  It plugs into transformers as
an attention implementation, switched on for one forward by
:func:`shared_prefix`.  A model whose own code computes attention
(remote code, ALiBi models) never calls it: :func:`shared_prefix` checks after
every forward that each attention layer came through here and raises
:class:`AttentionBypassed` otherwise, so such a model is never scored without
its prefix.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import pkgutil
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import backends, check
from .check import CHECK_ENV, AttentionMismatch  # noqa: F401  (public names)

NAME = "pytest_mmlu_shared_prefix"
# Force one backend by module name (debugging, tests): e.g. cuda_fused on CPU runs
# FlexAttention eagerly there.
BACKEND_ENV = "PYTEST_MMLU_ATTENTION_BACKEND"

_state = threading.local()


class AttentionBypassed(Exception):
    """A forward ran without our attention in some layers: its prefix keys were never seen."""

    def __init__(self, missing: Iterable[int], expected: int, detail: str | None = None) -> None:
        self.missing = sorted(missing)
        super().__init__(
            detail
            or f"attention of {len(self.missing)} of {expected} layers bypassed "
            f"the attention interface (layers {self.missing[:8]})"
        )


@dataclass
class _Forward:
    """What one shared-prefix forward needs, and which layers actually came through."""

    keys: Sequence[Sequence[Any]] | None
    values: Sequence[Sequence[Any]] | None
    segments: Sequence[tuple[int, int]]
    capture: Callable[[int, Any, Any], None] | None
    seen: set[int] = field(default_factory=set)


def backends_in_order() -> list[Any]:
    """The backend modules in ``backends/``, highest priority first."""
    return list(_backends())


@functools.cache
def _backends() -> tuple[Any, ...]:
    found = [
        importlib.import_module(f"{backends.__name__}.{info.name}") for info in pkgutil.iter_modules(backends.__path__)
    ]
    return tuple(sorted(found, key=lambda m: -m.PRIORITY))


def backend_for(query: Any, softcap: float | None) -> Any:
    """The backend that runs this call: the forced one, else the first that accepts it."""
    forced = os.environ.get(BACKEND_ENV, "")
    for module in _backends():
        name = module.__name__.rsplit(".", 1)[1]
        if name == forced or (not forced and module.accepts(query, softcap)):
            return module
    raise ValueError(
        f"{BACKEND_ENV}={forced!r}: no such attention backend "
        f"(have {[m.__name__.rsplit('.', 1)[1] for m in _backends()]})"
    )


def _attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    **_: Any,
) -> tuple[Any, None]:
    """query [1, H, T, d], key/value [1, KVH, T, d]: suffixes packed end to end; -> [1, T, H, d]."""
    call: _Forward = _state.current
    layer = module.layer_idx
    call.seen.add(layer)
    if call.capture is not None:  # a prefix chunk: its keys and values serve what follows
        call.capture(layer, key[0], value[0])
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    piece_ks = call.keys[layer] if call.keys is not None else []
    piece_vs = call.values[layer] if call.values is not None else []
    backend = backend_for(query, softcap)
    out = backend.attend(query[0], key[0], value[0], piece_ks, piece_vs, call.segments, scale, softcap)
    if os.environ.get(check.CHECK_ENV, "") not in ("", "0"):
        check.check(layer, query[0], key[0], value[0], piece_ks, piece_vs, call.segments, scale, softcap, out)
    return out.to(query.dtype).transpose(0, 1).unsqueeze(0), None


def register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, _attention)


def attention_layers(model: Any) -> frozenset[int] | None:
    """The layer indices of the model's attention modules, or None when some module has none
    (it could not find its prefix keys and values)."""
    modules = [m for name, m in model.named_modules() if name.endswith(("self_attn", ".attn", ".attention"))]
    indices = [getattr(m, "layer_idx", None) for m in modules]
    layers = [i for i in indices if isinstance(i, int)]
    if not modules or len(layers) != len(indices):
        return None
    return frozenset(layers)


@contextlib.contextmanager
def shared_prefix(
    model: Any,
    layers: frozenset[int],
    keys: Sequence[Sequence[Any]] | None,
    values: Sequence[Sequence[Any]] | None,
    segments: Sequence[tuple[int, int]],
    capture: Callable[[int, Any, Any], None] | None = None,
) -> Iterator[None]:
    """Run the model's attention as shared-prefix attention over packed suffixes for one forward.

    ``layers``: the attention layers that must come through (:func:`attention_layers`);
    ``keys``/``values``: per layer, the prefix pieces [KVH, P_i, d] (None: no prefix);
    ``segments``: (start, length) of each packed row; ``capture``: called with each layer's
    index, keys and values [KVH, T, d] of the packed tokens, when a prefix chunk is run.
    Raises :class:`AttentionBypassed` after a forward in which some layer did not.
    """
    config = model.config
    previous = config._attn_implementation
    call = _state.current = _Forward(keys, values, segments, capture)
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = previous
        _state.current = None
    if call.seen != layers:
        raise AttentionBypassed(layers - call.seen, len(layers))
