"""The scoring engine: token requests in, log-likelihoods out.

Same numbers as lm-eval's HF backend (each request is scored on
``(context + continuation)[-(max_length + 1):][:-1]``), computed with far less
work and memory:

1. Requests with the same input row (the four choices of a question) share
   one row; only their target tokens differ.
2. Rows are sorted into a tree of shared token prefixes (a subject's description
   and few-shot examples, then a reading passage several questions share).  Each
   prefix runs once, in chunks; its keys and values are kept once, as pieces that
   every row below it attends to (``attention.py``), never copied per row.
3. Only the scored positions reach the LM head (``logits_to_keep``): no
   full-vocabulary logits for the prefix or the question text.
4. Suffixes are packed end to end with no padding, longest first; rows per batch
   come from the memory planner (``memory.py``).  Models whose attention cannot be
   swapped run the prefix into their own KV cache and left-pad the suffixes.
5. Models that cannot take a shared cache (sliding-window attention shorter
   than the rows, or no cache/position inputs) are scored in plain batches
   with no prefix: same answers, more work.  So is a model whose own code
   computes attention (``attention.AttentionBypassed``): every shared-prefix
   forward checks that each layer came through our attention, and the first
   that did not restarts the evaluation in plain batches.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import attention
from .memory import BatchPlanner, is_oom, release_memory
from .prompts import TokenRequest

PREFIX_CHUNK = 512  # tokens per forward when running a shared prefix
MIN_SHARED_PREFIX = 32  # tokens; below this a separate prefix pass costs more than it saves
DEFAULT_MAX_LENGTH = 2048  # lm-eval's default when neither config nor tokenizer says


@dataclass(frozen=True)
class Score:
    loglikelihood: float
    is_greedy: bool


@dataclass
class EngineStats:
    batch_sizes: list[int] = field(default_factory=list)
    rows: int = 0
    prefix_tokens: int = 0  # tokens run in shared-prefix passes
    suffix_tokens: int = 0  # real (unpadded) tokens run in batches
    padded_tokens: int = 0  # tokens run in batches, padding included
    scored_positions: int = 0
    peak_bytes: int = 0
    seconds: float = 0.0
    mode: str = "prefix"
    mode_reason: str | None = None  # why an evaluation ran in plain batches, where it could not share


@dataclass
class _Row:
    tokens: tuple[int, ...]
    scored: int  # number of trailing positions whose logits are needed
    targets: list[tuple[int, tuple[int, ...]]]  # (request index, continuation tokens)


@dataclass
class _Node:
    """A shared prefix: rows scored right after it, and longer shared prefixes below it."""

    prefix_len: int
    tokens: tuple[int, ...]  # the prefix itself
    rows: list[_Row]
    children: list[_Node]

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


@dataclass
class _SharedPrefix:
    """A prefix run through shared-prefix attention: its keys and values, per layer, as the
    pieces the tree added (few-shot block, then a shared passage); never copied."""

    keys: list[list[Any]] | None  # per layer: pieces [KVH, P_i, d]; None: no prefix
    values: list[list[Any]] | None
    length: int


@dataclass
class _CachePrefix:
    """A prefix run into the model's own KV cache (models without shared-prefix attention)."""

    cache: Any
    length: int


def resolve_max_length(config: Any, tokenizer: Any = None) -> int:
    """lm-eval's rule: config n_positions / max_position_embeddings / n_ctx, then tokenizer."""
    cfg = getattr(config, "text_config", None) or config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, attr, None)
        if value is not None:
            return int(value)
    model_max = getattr(tokenizer, "model_max_length", None)
    if model_max is not None and model_max < 10**20:
        return int(model_max)
    return DEFAULT_MAX_LENGTH


def _sliding_window(config: Any) -> int | None:
    cfg = getattr(config, "text_config", None) or config
    window = getattr(cfg, "sliding_window", None)
    if not window or getattr(cfg, "use_sliding_window", True) is False:
        return None
    layer_types = getattr(cfg, "layer_types", None)
    if layer_types is not None and "sliding_attention" not in layer_types:
        return None
    return int(window)


def _common_prefix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    n = min(len(a), len(b), limit)
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class ScoringEngine:
    """Scores token requests on one causal LM; the one seam used by plugin, bench and lm-eval."""

    def __init__(self, model: Any, max_length: int, planner_factory: Callable[[], BatchPlanner],
                 meter: Any) -> None:
        self.model = model
        self.max_length = max_length
        self.planner_factory = planner_factory
        self.meter = meter
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._can_prefix = self._cache_kw in params and "position_ids" in params
        self._keep_logits = "logits_to_keep" in params
        self._window = _sliding_window(model.config)
        self._layers = attention.attention_layers(model)
        self._shared_attention = self._can_prefix and self._keep_logits and self._layers is not None
        self._bypassed: str | None = None  # set once the model's own code was seen computing attention
        self._planner: BatchPlanner | None = None  # the current score() call's
        if self._shared_attention:
            attention.register()
        self.stats = EngineStats()

    # -- public seam ---------------------------------------------------------------------------
    def score(self, requests: Sequence[TokenRequest],
              progress: Callable[[int], None] | None = None) -> list[Score]:
        """Log-likelihood and greedy flag of each request's continuation, in request order.

        ``progress`` is called with the number of requests finished so far.
        """
        start = time.perf_counter()
        try:
            results = self._score(requests, progress)
        except attention.AttentionBypassed as exc:
            # Scores computed so far saw no prefix: drop them all and score without sharing.
            self._bypassed = f"the model's own code computes attention ({exc})"
            results = self._score(requests, progress)
        self.stats.seconds = time.perf_counter() - start
        return results

    def _score(self, requests: Sequence[TokenRequest],
               progress: Callable[[int], None] | None) -> list[Score]:
        import torch

        self.stats = EngineStats()
        rows = self._rows(requests)
        longest = max((len(r.tokens) for r in rows), default=0)
        if self._bypassed:
            use_prefix, self.stats.mode_reason = False, self._bypassed
        elif not self._can_prefix:
            use_prefix, self.stats.mode_reason = False, "the model takes no cache or position ids"
        elif self._window is not None and longest > self._window:
            use_prefix = False
            self.stats.mode_reason = f"sliding window {self._window} < longest row {longest}"
        else:
            use_prefix = True
        self.stats.mode = "prefix" if use_prefix else "plain"
        root = self._tree(rows, 0) if use_prefix else _Node(0, (), rows, [])
        planner = self._planner = self.planner_factory()
        shared = planner.shared_prefix = use_prefix and self._shared_attention
        held = root.held_tokens(shared)
        for node in root.walk():
            if node.rows:
                planner.check_fits(node.prefix_len, max(len(r.tokens) for r in node.rows) - node.prefix_len,
                                   max(r.scored for r in node.rows), held[id(node)])
        results: list[Score | None] = [None] * len(requests)
        done = 0

        def visit(node: _Node, parent: _SharedPrefix | _CachePrefix | None) -> None:
            nonlocal done
            self.meter.reset_peak()
            if node.prefix_len:
                prefix = self._run_prefix(node, parent, shared)
            else:  # packed with no prefix where the attention allows, else padded batches
                prefix = _SharedPrefix(None, None, 0) if shared else None
            for batch in self._batches(node.rows, node.prefix_len, held[id(node)], prefix, planner):
                for row, scores in batch:
                    for (req_index, _), score in zip(row.targets, scores):
                        results[req_index] = score
                    done += len(row.targets)
                if progress is not None:
                    progress(done)
            for child in node.children:
                visit(child, prefix if node.prefix_len else None)

        self.meter.reset_peak()
        with torch.inference_mode():
            visit(root, None)
        self.stats.peak_bytes = max(self.stats.peak_bytes, self.meter.peak())
        return results  # type: ignore[return-value]

    # -- planning ------------------------------------------------------------------------------
    def _rows(self, requests: Sequence[TokenRequest]) -> list[_Row]:
        by_tokens: dict[tuple[int, ...], _Row] = {}
        for index, req in enumerate(requests):
            cont = req.continuation
            if not cont:
                raise ValueError(f"request {index}: empty continuation")
            if len(cont) > self.max_length:
                raise ValueError(f"request {index}: continuation longer than max_length {self.max_length}")
            tokens = (req.context + cont)[-(self.max_length + 1):][:-1]
            row = by_tokens.get(tokens)
            if row is None:
                row = by_tokens[tokens] = _Row(tokens, len(cont), [])
            row.scored = max(row.scored, len(cont))
            row.targets.append((index, cont))
        self.stats.rows = len(by_tokens)
        return list(by_tokens.values())

    def _tree(self, rows: list[_Row], base: int) -> _Node:
        """The prefix tree of rows that all share ``tokens[:base]``.

        Consecutive rows (in sorted order) sharing at least MIN_SHARED_PREFIX more tokens form
        a child whose prefix runs once, on top of this node's (a subject's few-shot block, then
        a reading passage several questions share); the other rows are scored at this node.
        """
        rows = sorted(rows, key=lambda r: r.tokens)
        direct: list[_Row] = []
        children: list[_Node] = []
        current: list[_Row] = []
        shared = 0

        def close() -> None:
            if len(current) > 1 and shared >= base + MIN_SHARED_PREFIX:
                children.append(self._tree(current, shared))
            else:
                direct.extend(current)

        for row in rows:
            room = len(row.tokens) - row.scored  # scored positions must stay in the suffix
            if current:
                common = _common_prefix(current[-1].tokens, row.tokens, room)
                if min(shared, common) >= base + MIN_SHARED_PREFIX:
                    current.append(row)
                    shared = min(shared, common)
                    continue
                close()
            current, shared = [row], room
        if current:
            close()
        return _Node(base, rows[0].tokens[:base] if rows else (), direct, children)

    def _batches(self, rows: list[_Row], prefix_len: int, held: int,
                 prefix: _SharedPrefix | _CachePrefix | None, planner: BatchPlanner):
        """Yield lists of (row, scores), longest suffixes first, sized by the planner."""
        pending = sorted(rows, key=lambda r: len(r.tokens), reverse=True)
        while pending:
            suffix = len(pending[0].tokens) - prefix_len
            scored = max(r.scored for r in pending[:64])
            n = planner.rows(prefix_len, suffix, scored, len(pending), held)
            batch = pending[:n]
            try:
                self.meter.reset_peak()
                scores = self._forward(batch, prefix_len, prefix)
            except Exception as exc:
                if not is_oom(exc):
                    raise
                release_memory(str(self.model.device))
                if n == 1:
                    raise planner.out_of_memory(f"at batch 1 (a row of {suffix} tokens after a "
                                                f"{prefix_len}-token prefix)") from None
                planner.on_oom(n)
                continue
            peak = self.meter.peak()
            self.stats.peak_bytes = max(self.stats.peak_bytes, peak)
            planner.observe(n, prefix_len, suffix, scored, peak, held)
            self.stats.batch_sizes.append(n)
            del pending[:n]
            yield list(zip(batch, scores))

    # -- model calls ---------------------------------------------------------------------------
    def _run_prefix(self, node: _Node, parent: _SharedPrefix | _CachePrefix | None,
                    shared: bool) -> _SharedPrefix | _CachePrefix:
        """Run a node's prefix once, on top of its parent's when there is one."""
        start = 0 if parent is None else parent.length
        try:
            if shared:
                prefix: _SharedPrefix | _CachePrefix = self._run_shared_prefix(node, parent, start)
            else:
                prefix = self._run_cached_prefix(node, parent, start)
        except Exception as exc:
            if not is_oom(exc):
                raise
            release_memory(str(self.model.device))
            planner = self._planner or self.planner_factory()
            raise planner.out_of_memory(f"in a shared-prefix pass ({node.prefix_len - start} tokens "
                                        f"in chunks of {PREFIX_CHUNK})") from None
        self.stats.prefix_tokens += node.prefix_len - start
        self.stats.peak_bytes = max(self.stats.peak_bytes, self.meter.peak())
        return prefix

    def _prefix_chunks(self, node: _Node, start: int):
        """(first position, input ids, position ids) of each chunk of the prefix after ``start``:
        a long few-shot block never holds all its activations at once."""
        import torch

        device = self.model.device
        for begin in range(start, node.prefix_len, PREFIX_CHUNK):
            end = min(begin + PREFIX_CHUNK, node.prefix_len)
            yield (begin, torch.tensor([list(node.tokens[begin:end])], device=device),
                   torch.arange(begin, end, device=device)[None])

    def _run_shared_prefix(self, node: _Node, parent: _SharedPrefix | None, start: int) -> _SharedPrefix:
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
            own_k[layer][:, offset:offset + k.shape[1]].copy_(k)
            own_v[layer][:, offset:offset + v.shape[1]].copy_(v)

        for begin, ids, positions in self._prefix_chunks(node, start):
            offset = begin - start
            done_k = {layer: buf[:, :offset] for layer, buf in own_k.items()}
            done_v = {layer: buf[:, :offset] for layer, buf in own_v.items()}
            with attention.shared_prefix(self.model, self._layers, _pieces(base_k, done_k),
                                         _pieces(base_v, done_v), [(0, ids.shape[1])], keep):
                self.model(input_ids=ids, position_ids=positions, use_cache=False, logits_to_keep=1)
        return _SharedPrefix(_pieces(base_k, own_k), _pieces(base_v, own_v), node.prefix_len)

    def _run_cached_prefix(self, node: _Node, parent: _CachePrefix | None, start: int) -> _CachePrefix:
        cache = None if parent is None else _expand_cache(parent.cache, 1)  # parent stays intact
        for _, ids, positions in self._prefix_chunks(node, start):
            kwargs: dict[str, Any] = {"use_cache": True}
            if self._keep_logits:
                kwargs["logits_to_keep"] = 1
            if cache is not None:
                kwargs[self._cache_kw] = cache
                kwargs["position_ids"] = positions
            out = self.model(input_ids=ids, **kwargs)
            cache = getattr(out, "cache", None) or out.past_key_values
        # A model whose own code ignores the cache would score every row without its prefix.
        held = cache.get_seq_length() if hasattr(cache, "get_seq_length") else None
        if held != node.prefix_len:
            raise attention.AttentionBypassed([], 0, f"its cache holds {held} of the {node.prefix_len} "
                                                     f"prefix tokens it was given")
        return _CachePrefix(cache, node.prefix_len)

    def _forward(self, batch: list[_Row], prefix_len: int,
                 prefix: _SharedPrefix | _CachePrefix | None) -> list[list[Score]]:
        """Score one batch: packed after a shared prefix, else left-padded rows with a mask."""
        import torch

        device = self.model.device
        suffixes = [r.tokens[prefix_len:] for r in batch]
        if isinstance(prefix, _SharedPrefix):
            ids = torch.tensor([[t for s in suffixes for t in s]])
            positions = torch.tensor([[prefix_len + i for s in suffixes for i in range(len(s))]])
            starts = [0, *itertools.accumulate(len(s) for s in suffixes[:-1])]
            ends = [start + len(s) for start, s in zip(starts, suffixes)]
            rows_of = [0] * len(batch)  # every row lives in batch row 0 of the packed input
            segments = list(zip(starts, map(len, suffixes)))
            self.stats.padded_tokens += len(ids[0])
        else:
            width = max(len(s) for s in suffixes)
            ids = torch.zeros((len(batch), width), dtype=torch.long)
            mask = torch.zeros((len(batch), prefix_len + width), dtype=torch.long)
            mask[:, :prefix_len] = 1
            positions = torch.zeros((len(batch), width), dtype=torch.long)
            for i, s in enumerate(suffixes):
                # Left padding: every row's last token in the last column.
                ids[i, width - len(s):] = torch.tensor(s)
                mask[i, prefix_len + width - len(s):] = 1
                positions[i, width - len(s):] = torch.arange(prefix_len, prefix_len + len(s))
            ends = [width] * len(batch)
            rows_of = list(range(len(batch)))
            self.stats.padded_tokens += len(batch) * width
        # The LM head runs only on scored columns (their union over the batch's rows).
        columns = sorted({c for end, r in zip(ends, batch) for c in range(end - r.scored, end)})
        kwargs: dict[str, Any] = {"position_ids": positions.to(device), "use_cache": False}
        if self._keep_logits:
            kwargs["logits_to_keep"] = torch.tensor(columns, device=device)
        if isinstance(prefix, _SharedPrefix):
            with attention.shared_prefix(self.model, self._layers, prefix.keys, prefix.values, segments):
                out = self.model(input_ids=ids.to(device), **kwargs)
        else:
            kwargs["attention_mask"] = mask.to(device)
            if prefix is not None:
                kwargs[self._cache_kw] = _expand_cache(prefix.cache, len(batch))
                kwargs["use_cache"] = True
            out = self.model(input_ids=ids.to(device), **kwargs)
        logits = out.logits if self._keep_logits else out.logits[:, columns, :]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        greedy = logprobs.argmax(dim=-1)
        index = {c: j for j, c in enumerate(columns)}
        self.stats.suffix_tokens += sum(len(s) for s in suffixes)
        self.stats.scored_positions += len(columns) * logprobs.shape[0]
        results: list[list[Score]] = []
        for row, end, b in zip(batch, ends, rows_of):
            row_scores = []
            for _, cont in row.targets:
                cols = torch.tensor([index[c] for c in range(end - len(cont), end)], device=logprobs.device)
                target = torch.tensor(cont, device=logprobs.device)
                lp = logprobs[b, cols, :].gather(1, target[:, None]).sum()
                row_scores.append(Score(float(lp), bool((greedy[b, cols] == target).all())))
            results.append(row_scores)
        return results


def _pieces(base: list[list[Any]] | None, own: dict[int, Any]) -> list[list[Any]] | None:
    """Per layer, the parent's prefix pieces followed by this node's (if it has any yet)."""
    if not own:
        return base
    layers = max(own) + 1
    return [(list(base[layer]) if base is not None else []) + ([own[layer]] if layer in own else [])
            for layer in range(layers)]


def _expand_cache(cache: Any, rows: int) -> Any:
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
