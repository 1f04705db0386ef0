"""The CUDA backend (one FlexAttention call per layer per batch), proven on CPU.

FlexAttention runs eagerly on CPU, so the same module that runs compiled on CUDA is checked
here: its block mask against the dense mask it stands for, block by block, and its outputs
and the engine's scores against a float64 truth, for several segment and prefix shapes.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch
from factories import make_engine, make_model, make_tokenizer, mmlu_like_requests, nested_requests
from truth import truth_loglikelihoods

from pytest_mmlu.engine.attention import BACKEND_ENV
from pytest_mmlu.engine.attention.backends import cuda_fused

warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# (segment lengths, prefix length): one row, many short rows, rows crossing block edges, rows
# of one token, no prefix, a prefix shorter than a block, prefixes ending mid-block.
SHAPES = [
    ([40], 0),
    ([5, 9, 1, 30, 2], 21),
    ([16, 16, 16], 16),
    ([1] * 11, 7),
    ([37, 3, 50, 17, 1, 29], 45),
    ([64], 100),
]


def segments_of(lengths):
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    return list(zip(starts, lengths))


def dense_mask(lengths, prefix):
    """[T, P + T]: every prefix key, then causally the keys of the query's own segment."""
    total = sum(lengths)
    doc = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    mask = torch.zeros(total, prefix + total, dtype=torch.bool)
    mask[:, :prefix] = True
    own = (doc[:, None] == doc[None, :]) & (torch.arange(total)[None, :] <= torch.arange(total)[:, None])
    mask[:, prefix:] = own
    return mask


@pytest.mark.parametrize(("lengths", "prefix"), SHAPES)
def test_block_mask_marks_each_block_as_the_dense_mask_does(lengths, prefix):
    """Blocks with no visible key are skipped, blocks all visible skip the mask function,
    the rest apply it: each must agree with the dense mask, or attention reads the wrong keys."""
    block = 8  # small blocks: many of each kind
    total = sum(lengths)
    mask = cuda_fused.block_mask(segments_of(lengths), total, prefix, torch.device("cpu"), block=block)
    dense = dense_mask(lengths, prefix)
    n_q, n_kv = -(-total // block), -(-(prefix + total) // block)
    for i in range(n_q):
        partial = set(mask.kv_indices[0, 0, i, : mask.kv_num_blocks[0, 0, i]].tolist())
        full = set(mask.full_kv_indices[0, 0, i, : mask.full_kv_num_blocks[0, 0, i]].tolist())
        for j in range(n_kv):
            tile = dense[i * block : (i + 1) * block, j * block : (j + 1) * block]
            want = "full" if tile.all() else "partial" if tile.any() else "none"
            got = "full" if j in full else "partial" if j in partial else "none"
            assert got == want, f"query block {i}, key block {j}: {got}, dense says {want}"
    # The mask function itself, on every pair.
    q, kv = torch.meshgrid(torch.arange(total), torch.arange(prefix + total), indexing="ij")
    assert torch.equal(mask.mask_mod(0, 0, q, kv), dense)


def float64_attention(q, keys, values, mask, scale, softcap=None):
    group = q.shape[0] // keys.shape[0]
    keys, values = keys.double().repeat_interleave(group, 0), values.double().repeat_interleave(group, 0)
    scores = torch.matmul(q.double(), keys.transpose(1, 2)) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    return torch.matmul(torch.softmax(scores.masked_fill(~mask, float("-inf")), -1), values)


@pytest.mark.parametrize(("lengths", "prefix"), SHAPES)
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.bfloat16, 3e-2), (torch.float16, 4e-3)])
def test_fused_attention_matches_float64_softmax_attention(lengths, prefix, dtype, tolerance):
    """Grouped-query heads (6 query heads on 2 key heads), the prefix in pieces, softcapping."""
    gen = torch.Generator().manual_seed(len(lengths) * 100 + prefix)
    total, heads, kv_heads, dim = sum(lengths), 6, 2, 16
    q = torch.randn(heads, total, dim, generator=gen)
    k = torch.randn(kv_heads, total, dim, generator=gen)
    v = torch.randn(kv_heads, total, dim, generator=gen)
    cut = prefix // 3  # two pieces (a few-shot block, then a passage)
    pk = torch.randn(kv_heads, prefix, dim, generator=gen)
    pv = torch.randn(kv_heads, prefix, dim, generator=gen)
    pieces_k = [pk[:, :cut], pk[:, cut:]] if prefix else []
    pieces_v = [pv[:, :cut], pv[:, cut:]] if prefix else []
    mask = dense_mask(lengths, prefix)
    for softcap in (None, 2.0):
        want = float64_attention(q, torch.cat([pk, k], 1), torch.cat([pv, v], 1), mask, 0.25, softcap)
        got = cuda_fused.attend(
            q.to(dtype),
            k.to(dtype),
            v.to(dtype),
            [p.to(dtype) for p in pieces_k],
            [p.to(dtype) for p in pieces_v],
            segments_of(lengths),
            0.25,
            softcap,
        )
        assert (got.double() - want).abs().max() <= tolerance


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma2", "gpt_neox"])  # MHA, GQA, softcap, partial rope
def test_engine_on_the_fused_backend_matches_the_float64_truth(arch, monkeypatch):
    """The whole engine with every attention call on the CUDA backend: nested prefixes run in
    several chunks (pieces), packed batches of many rows."""
    monkeypatch.setenv(BACKEND_ENV, "cuda_fused")
    monkeypatch.setattr("pytest_mmlu.engine.prefix.PREFIX_CHUNK", 16)
    tok = make_tokenizer()
    model = make_model(arch, len(tok))
    nested, _ = nested_requests(len(tok))
    requests = nested + mmlu_like_requests(len(tok), n_groups=2, per_group=4, multi=True)
    engine = make_engine(model)
    got = engine.score(requests)
    truth = truth_loglikelihoods(model, requests, 1024)
    assert engine.stats.mode == "prefix"
    assert max(abs(g.loglikelihood - t) for g, t in zip(got, truth)) <= 1e-4


def test_the_backend_is_chosen_by_device_and_can_be_forced(monkeypatch):
    from pytest_mmlu.engine import attention

    cpu_query = torch.zeros(2, 4, 8)
    names = [m.__name__.rsplit(".", 1)[1] for m in attention.backends_in_order()]
    assert names == ["cuda_fused", "cpu_flash", "portable"]
    assert attention.backend_for(cpu_query, None).__name__.endswith("cpu_flash")
    assert attention.backend_for(cpu_query, 30.0).__name__.endswith("portable")  # softcap off CUDA
    cuda_query = SimpleNamespace(device=torch.device("cuda"))  # accepts() reads only the device
    assert cuda_fused.accepts(cuda_query, None) and cuda_fused.accepts(cuda_query, 50.0)
    monkeypatch.setenv(BACKEND_ENV, "no_such")
    with pytest.raises(ValueError, match="no such attention backend"):
        attention.backend_for(cpu_query, None)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bash bench/gpu_check.sh)")


@cuda
@pytest.mark.parametrize(("lengths", "prefix"), SHAPES)
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.bfloat16, 3e-2), (torch.float16, 4e-3)])
def test_compiled_fused_attention_on_cuda_matches_float64(lengths, prefix, dtype, tolerance):
    gen = torch.Generator().manual_seed(prefix)
    total, heads, kv_heads, dim = sum(lengths), 8, 2, 64
    q = torch.randn(heads, total, dim, generator=gen)
    k, v = torch.randn(2, kv_heads, total, dim, generator=gen)
    pk, pv = torch.randn(2, kv_heads, prefix, dim, generator=gen)
    want = float64_attention(q, torch.cat([pk, k], 1), torch.cat([pv, v], 1), dense_mask(lengths, prefix), 0.125)
    on = dict(device="cuda", dtype=dtype)
    got = cuda_fused.attend(
        q.to(**on),
        k.to(**on),
        v.to(**on),
        [pk.to(**on)] if prefix else [],
        [pv.to(**on)] if prefix else [],
        segments_of(lengths),
        0.125,
        None,
    )
    assert (got.double().cpu() - want).abs().max() <= tolerance


@cuda
def test_on_cuda_the_engine_runs_the_fused_backend(monkeypatch):
    from pytest_mmlu.memory.meters import make_meter

    calls = []
    real = cuda_fused.attend
    monkeypatch.setattr(cuda_fused, "attend", lambda *a: calls.append(a[0].device.type) or real(*a))
    tok = make_tokenizer()
    model = make_model("qwen2", len(tok))
    requests = mmlu_like_requests(len(tok))
    truth = truth_loglikelihoods(model, requests, 1024)
    engine = make_engine(model.to("cuda"))
    engine.meter = make_meter("cuda")  # make_engine's is the CPU meter
    got = engine.score(requests)
    assert calls and set(calls) == {"cuda"}
    assert max(abs(g.loglikelihood - t) for g, t in zip(got, truth)) <= 1e-4
