"""Running a shared prefix once: into shared-prefix attention pieces, or a model's own cache."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import attention
from .tree import Node

PREFIX_CHUNK = 512  # tokens per forward when running a shared prefix


@dataclass
class SharedPrefix:
    """A prefix run through shared-prefix attention: its keys and values, per layer, as the
    pieces the tree added (few-shot block, then a shared passage); never copied."""

    keys: list[list[Any]] | None  # per layer: pieces [KVH, P_i, d]; None: no prefix
    values: list[list[Any]] | None
    length: int


@dataclass
class CachePrefix:
    """A prefix run into the model's own KV cache (models without shared-prefix attention)."""

    cache: Any
    length: int


def chunks(model: Any, node: Node, start: int) -> Iterator[tuple[int, Any, Any]]:
    """(first position, input ids, position ids) of each chunk of the prefix after ``start``:
    a long few-shot block never holds all its activations at once."""
    import torch

    device = model.device
    for begin in range(start, node.prefix_len, PREFIX_CHUNK):
        end = min(begin + PREFIX_CHUNK, node.prefix_len)
        ids = torch.from_numpy(node.tokens[begin:end]).long()[None].to(device)
        yield begin, ids, torch.arange(begin, end, device=device)[None]


def run_shared(model: Any, layers: frozenset[int], node: Node, parent: SharedPrefix | None, start: int) -> SharedPrefix:
    """The node's prefix after ``start``, attending to its parent's pieces; returns them plus its own."""
    base_k = parent.keys if parent is not None else None
    base_v = parent.values if parent is not None else None
    # This node's keys and values go straight into one buffer per layer: chunks kept
    # as separate small tensors would fragment the heap and inflate resident memory.
    own_k: dict[int, Any] = {}
    own_v: dict[int, Any] = {}
    offset = 0

    def keep(layer: int, k: Any, v: Any) -> None:
        if layer not in own_k:
            shape = (k.shape[0], node.prefix_len - start, k.shape[2])
            own_k[layer], own_v[layer] = k.new_empty(shape), v.new_empty(shape)
        own_k[layer][:, offset : offset + k.shape[1]].copy_(k)
        own_v[layer][:, offset : offset + v.shape[1]].copy_(v)

    for begin, ids, positions in chunks(model, node, start):
        offset = begin - start
        done_k = {layer: buf[:, :offset] for layer, buf in own_k.items()}
        done_v = {layer: buf[:, :offset] for layer, buf in own_v.items()}
        with attention.shared_prefix(
            model, layers, pieces(base_k, done_k), pieces(base_v, done_v), [(0, ids.shape[1])], keep
        ):
            model(input_ids=ids, position_ids=positions, use_cache=False, logits_to_keep=1)
    return SharedPrefix(pieces(base_k, own_k), pieces(base_v, own_v), node.prefix_len)


def run_cached(
    model: Any, cache_kw: str, keep_logits: bool, node: Node, parent: CachePrefix | None, start: int
) -> CachePrefix:
    """The node's prefix after ``start`` run into (a copy of) its parent's cache."""
    cache = None if parent is None else expand_cache(parent.cache, 1)  # parent stays intact
    for _, ids, positions in chunks(model, node, start):
        kwargs: dict[str, Any] = {"use_cache": True}
        if keep_logits:
            kwargs["logits_to_keep"] = 1
        if cache is not None:
            kwargs[cache_kw] = cache
            kwargs["position_ids"] = positions
        out = model(input_ids=ids, **kwargs)
        cache = getattr(out, "cache", None) or out.past_key_values
    # A model whose own code ignores the cache would score every row without its prefix.
    get_length = getattr(cache, "get_seq_length", None)
    held = get_length() if get_length is not None else None
    if held != node.prefix_len:
        raise attention.AttentionBypassed(
            [], 0, f"its cache holds {held} of the {node.prefix_len} prefix tokens it was given"
        )
    return CachePrefix(cache, node.prefix_len)


def pieces(base: list[list[Any]] | None, own: dict[int, Any]) -> list[list[Any]] | None:
    """Per layer, the parent's prefix pieces followed by this node's (if it has any yet)."""
    if not own:
        return base
    layers = max(own) + 1
    return [
        (list(base[layer]) if base is not None else []) + ([own[layer]] if layer in own else [])
        for layer in range(layers)
    ]


def expand_cache(cache: Any, rows: int) -> Any:
    """A per-batch cache whose prefix is shared by all rows without copying it.

    DynamicLayer.update concatenates the new keys onto these stride-0 views, so
    the prefix is materialized only once per row inside attention, never kept twice.
    """
    layers = getattr(cache, "layers", None)
    if layers is not None and all(type(layer).__name__ == "DynamicLayer" for layer in layers):
        expanded = copy.copy(cache)
        expanded.layers = []
        for layer in layers:
            clone = copy.copy(layer)
            clone.keys = layer.keys.expand(rows, -1, -1, -1)
            clone.values = layer.values.expand(rows, -1, -1, -1)
            expanded.layers.append(clone)
        return expanded
    expanded = copy.deepcopy(cache)
    expanded.batch_repeat_interleave(rows)
    return expanded
