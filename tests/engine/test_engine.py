"""The engine must give lm-eval's numbers on every architecture, at every batch size."""

from __future__ import annotations

import random

import pytest
import torch
from factories import (
    ARCH_CONFIGS,
    make_engine,
    make_model,
    make_tokenizer,
    mmlu_like_requests,
    nested_requests,
    reference_scores,
)

from pytest_mmlu.engine.tree import build_tree
from pytest_mmlu.memory.cpu import CpuMeter
from pytest_mmlu.mmlu.prompts import TokenRequest

ARCHS = [a for a in ARCH_CONFIGS]


@pytest.mark.parametrize("arch", ARCHS)
def test_engine_matches_reference_on_every_architecture(arch):
    tok = make_tokenizer()
    model = make_model(arch, len(tok))
    reqs = mmlu_like_requests(len(tok), multi=True)
    expected = reference_scores(model, reqs, 1024)
    engine = make_engine(model)
    got = engine.score(reqs)
    assert max(abs(g.loglikelihood - e[0]) for g, e in zip(got, expected)) <= 1e-4
    assert [g.is_greedy for g in got] == [e[1] for e in expected]
    assert engine.stats.mode == ("plain" if arch == "gemma2_sliding" else "prefix")
    if engine.stats.mode == "prefix":
        # The shared prefixes ran once per group, not once per row.
        assert engine.stats.prefix_tokens < 3 * 61


@pytest.mark.parametrize("rows", [1, 4, 16, 32])
def test_predictions_identical_across_batch_sizes(rows):
    tok = make_tokenizer()
    model = make_model("qwen2", len(tok))
    reqs = mmlu_like_requests(len(tok), n_groups=2, per_group=20)
    base = make_engine(model, rows=1).score(reqs)
    got = make_engine(model, rows=rows).score(reqs)
    assert max(abs(a.loglikelihood - b.loglikelihood) for a, b in zip(base, got)) <= 1e-5

    def preds(scores):
        return [max(range(4), key=lambda j: scores[i + j].loglikelihood) for i in range(0, 160, 4)]

    assert preds(base) == preds(got)
    again = make_engine(model, rows=rows).score(reqs)
    assert [s.loglikelihood for s in again] == [s.loglikelihood for s in got]


def test_truncation_follows_lm_eval():
    tok = make_tokenizer()
    model = make_model("llama", len(tok))
    rng = random.Random(1)
    reqs = [TokenRequest(tuple(rng.randrange(3, len(tok)) for _ in range(90)), (5, 6)) for _ in range(3)]
    expected = reference_scores(model, reqs, 64)
    got = make_engine(model, max_length=64).score(reqs)
    assert max(abs(g.loglikelihood - e[0]) for g, e in zip(got, expected)) <= 1e-4


def test_gradients_never_recorded():
    tok = make_tokenizer()
    model = make_model("gpt2", len(tok))
    seen = []
    model.register_forward_hook(
        lambda m, i, o: seen.append((torch.is_grad_enabled(), torch.is_inference_mode_enabled(), m.training))
    )
    make_engine(model).score(mmlu_like_requests(len(tok), n_groups=1, per_group=2))
    assert seen and all(s == (False, True, False) for s in seen)


class _OomOnce(torch.nn.Module):
    """Raises the CUDA allocator's error for batches of many tokens, as a GPU running out would."""

    def __init__(self, model, max_tokens):
        super().__init__()
        self.inner, self.max_tokens, self.ooms = model, max_tokens, 0
        self.config, self.forward = model.config, self._forward
        self.device = model.device

    def _forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        use_cache=None,
        logits_to_keep=0,
        **kw,
    ):
        if input_ids.numel() > self.max_tokens:
            self.ooms += 1
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **_cache_kwargs(self.inner, past_key_values),
            **kw,
        )


def _cache_kwargs(model, cache):
    """The cache under the name the wrapped model takes (transformers 5.24 deprecates
    past_key_values for cache; 5.2 has only past_key_values)."""
    if cache is None:
        return {}
    import inspect

    return {"cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values": cache}


def test_out_of_memory_shrinks_and_completes():
    tok = make_tokenizer()
    model = make_model("llama", len(tok))
    reqs = mmlu_like_requests(len(tok), n_groups=1, per_group=12)
    flaky = _OomOnce(model, max_tokens=60)
    engine = make_engine(flaky, rows=None)
    got = engine.score(reqs)
    expected = reference_scores(model, reqs, 1024)
    assert flaky.ooms >= 1
    assert 1 < max(engine.stats.batch_sizes) < 12
    assert max(abs(g.loglikelihood - e[0]) for g, e in zip(got, expected)) <= 1e-4


@pytest.mark.parametrize(
    ("arch", "chunk"), [("llama", 512), ("llama", 16), ("gpt2", 16), ("gpt_neox", 16), ("gemma2", 16)]
)
def test_nested_prefixes_run_once_and_match_reference(arch, chunk, monkeypatch):
    """Each shared prefix runs once (also when it runs in several chunks), on top of its parent."""
    monkeypatch.setattr("pytest_mmlu.engine.prefix.PREFIX_CHUNK", chunk)
    tok = make_tokenizer()
    model = make_model(arch, len(tok))
    reqs, unique = nested_requests(len(tok))
    expected = reference_scores(model, reqs, 1024)
    engine = make_engine(model)
    got = engine.score(reqs)
    assert max(abs(g.loglikelihood - e[0]) for g, e in zip(got, expected)) <= 1e-4
    # Every distinct token prefix ran exactly once: the shots once, each shared passage once.
    assert engine.stats.prefix_tokens + engine.stats.suffix_tokens == len(unique)


def test_prefix_pieces_are_kept_once(monkeypatch):
    """A passage's prefix holds its parent's keys and values by reference, never a copy, so
    the memory held is the prefix's own tokens (what the planner counts)."""
    monkeypatch.setattr("pytest_mmlu.engine.prefix.PREFIX_CHUNK", 16)
    tok = make_tokenizer()
    model = make_model("llama", len(tok))
    engine = make_engine(model)
    root = build_tree(engine.rows(nested_requests(len(tok))[0]))
    (shots,) = root.children
    with torch.inference_mode():
        parent = engine._run_prefix(shots, None, shared=True)
        child = engine._run_prefix(shots.children[0], parent, shared=True)
    layers = model.config.num_hidden_layers
    assert len(parent.keys) == layers and all(len(p) == 1 for p in parent.keys)
    assert all(c[0] is p[0] for c, p in zip(child.keys, parent.keys))
    assert all(c[1].shape[1] == shots.children[0].prefix_len - shots.prefix_len for c in child.keys)
    assert root.held_tokens(shared=True)[id(shots.children[0])] == shots.children[0].prefix_len
    # A model's own cache copies the parent's into the child's: both are held.
    assert root.held_tokens(shared=False)[id(shots.children[0])] == shots.prefix_len + shots.children[0].prefix_len


@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])
def test_portable_attention_path_matches_reference(arch, monkeypatch):
    """The matmul path (used on CUDA and for softcapping) gives the same numbers on CPU."""
    from pytest_mmlu.engine.attention import BACKEND_ENV
    from pytest_mmlu.engine.attention.backends import portable

    monkeypatch.setenv(BACKEND_ENV, "portable")
    monkeypatch.setattr(portable, "SCORE_CHUNK_BYTES", 4096)  # many chunks
    tok = make_tokenizer()
    model = make_model(arch, len(tok))
    reqs = mmlu_like_requests(len(tok), multi=True)
    expected = reference_scores(model, reqs, 1024)
    got = make_engine(model, rows=8).score(reqs)
    assert max(abs(g.loglikelihood - e[0]) for g, e in zip(got, expected)) <= 1e-4


def test_out_of_memory_at_batch_1_is_a_clear_error_not_a_traceback():
    from pytest_mmlu.memory.errors import OutOfMemory

    tok = make_tokenizer()
    model = make_model("llama", len(tok))
    rng = random.Random(3)
    loners = [TokenRequest(tuple(rng.randrange(3, len(tok)) for _ in range(120)), (5,)) for _ in range(3)]
    with pytest.raises(
        OutOfMemory,
        match=r"ran out of memory on cpu at batch 1 \(a row of 120 tokens "
        r"after a 0-token prefix\) \(planned limit .* GiB\)",
    ):
        make_engine(_OomOnce(model, max_tokens=100)).score(loners)


def test_out_of_memory_in_a_prefix_pass_is_a_clear_error_not_a_traceback():
    from pytest_mmlu.memory.errors import OutOfMemory

    tok = make_tokenizer()
    model = make_model("llama", len(tok))
    reqs = mmlu_like_requests(len(tok), n_groups=1, per_group=3, prefix_len=80)
    budget = CpuMeter().current() + 2**30
    with pytest.raises(
        OutOfMemory,
        match=r"in a shared-prefix pass \(\d+ tokens in chunks of 512\) "
        r"\(budget [\d.]+ GiB\)",
    ):
        make_engine(_OomOnce(model, max_tokens=60), limit=budget).score(reqs)


class _ForgetsCache(torch.nn.Module):
    """A model whose own code keeps nothing in the cache it returns (as a remote-code model
    with its own attention may): rows scored 'after' its prefix would see no prefix at all."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.config, self.forward = model, model.config, self._forward
        self.device = model.device

    def _forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        use_cache=None,
        logits_to_keep=0,
        **kw,
    ):
        from transformers import DynamicCache

        out = self.inner(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **_cache_kwargs(self.inner, past_key_values),
            **kw,
        )
        for key in ("cache", "past_key_values"):  # transformers 5.2 names it past_key_values
            if use_cache and key in out:
                out[key] = DynamicCache()
        return out


def test_a_model_keeping_no_prefix_in_its_cache_is_scored_in_plain_batches(monkeypatch):
    from truth import truth_loglikelihoods

    from pytest_mmlu.engine import attention

    monkeypatch.setattr(attention, "attention_layers", lambda model: None)  # the model-cache path
    tok = make_tokenizer()
    model = make_model("llama", len(tok))
    reqs = mmlu_like_requests(len(tok), n_groups=2, per_group=3)
    engine = make_engine(_ForgetsCache(model))
    got = engine.score(reqs)
    truth = truth_loglikelihoods(model, reqs, 1024)
    assert max(abs(g.loglikelihood - t) for g, t in zip(got, truth)) <= 1e-4
    assert engine.stats.mode == "plain"
    assert "its cache holds 0 of the" in engine.stats.mode_reason


class _HostReads(torch.overrides.TorchFunctionMode):
    """Counts the calls that bring a tensor's values to the host (each a device sync on CUDA)."""

    READS = {"item", "tolist", "cpu", "numpy", "__float__", "__bool__", "__int__"}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.READS:
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_a_batch_reads_its_scores_back_once_not_once_per_request():
    """Host reads per batch do not grow with the requests in it (the old loop did two per request:
    56,168 device syncs on all of MMLU)."""
    tok = make_tokenizer()
    model = make_model("llama", len(tok))
    reads = []
    for per_group in (2, 8):
        reqs = mmlu_like_requests(len(tok), n_groups=1, per_group=per_group, multi=True)
        engine = make_engine(model, rows=64)  # every row of a node in one batch
        with _HostReads() as counter:
            engine.score(reqs)
        reads.append(counter.count / len(engine.stats.batch_sizes))
    assert reads[0] == reads[1], f"host reads per batch: {reads} for 2 and 8 questions a batch"
