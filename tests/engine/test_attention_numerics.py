"""Half-precision attention numerics of the shared-prefix backends (issue 9)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from factories import make_engine, make_model, make_tokenizer, mmlu_like_requests, nested_requests
from truth import truth_loglikelihoods

from pytest_mmlu.engine import attention
from pytest_mmlu.engine.attention import compose
from pytest_mmlu.engine.attention.backends import cpu_flash, portable


def reference(q, k, v, scale, causal):
    """float64 softmax attention and its log-sum-exp."""
    scores = torch.matmul(q.double(), k.double().transpose(1, 2)) * scale
    if causal:
        scores.masked_fill_(torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    return torch.matmul((scores - lse[..., None]).exp(), v.double()), lse


@pytest.mark.parametrize("causal", [False, True])
def test_portable_path_scales_before_the_half_precision_product(causal):
    """q.k = 102,400 overflows fp16 (max 65,504); q.k * scale = 12,800 does not."""
    gen = torch.Generator().manual_seed(0)
    q = (40 + torch.rand((2, 16, 64), generator=gen)).half()
    k = (40 + torch.rand((2, 16, 64), generator=gen)).half()
    v = torch.randn((2, 16, 64), generator=gen).half()
    out, lse = portable.part(q, k, v, 0.125, causal)
    _, want_lse = reference(q, k, v, 0.125, causal)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    assert (lse.double() - want_lse).abs().max() / want_lse.abs().max() < 1e-2
    # fp16 scores this large are coarse (spacing 8 at 12,800), so the weights are not compared:
    # the output must be a finite convex combination of the values.
    assert out.abs().max() <= v.float().abs().max() + 1e-3


@pytest.fixture
def fresh_probe():
    """The kernel's answer per dtype is asked once per process: ask a faked kernel afresh,
    and leave no faked answer behind."""
    cpu_flash.refuses.cache_clear()
    yield
    cpu_flash.refuses.cache_clear()


def _refusing_bf16(*args, **kwargs):
    if args[0].dtype == torch.bfloat16:
        raise RuntimeError("pack_vnni2 is only supported when avx512 is supported")
    return _refusing_bf16.kernel(*args, **kwargs)


def test_a_dtype_the_cpu_flash_kernel_refuses_takes_the_portable_path(monkeypatch, fresh_probe):
    """torch built for a lower ATEN_CPU_CAPABILITY than the CPU has refuses bf16 in its flash
    kernel: the engine must score on, with the same numbers, instead of crashing."""
    _refusing_bf16.kernel = cpu_flash.KERNEL
    monkeypatch.setattr(cpu_flash, "KERNEL", _refusing_bf16)
    tok = make_tokenizer()
    model = make_model("qwen2", len(tok)).to(torch.bfloat16)
    reqs = mmlu_like_requests(len(tok))
    got = [s.loglikelihood for s in make_engine(model).score(reqs)]
    truth = truth_loglikelihoods(model, reqs, 1024)
    assert cpu_flash.refuses(torch.bfloat16) and not cpu_flash.refuses(torch.float32)
    assert max(abs(a - b) for a, b in zip(got, truth)) <= 5e-3


def test_bf16_scores_under_a_lower_cpu_capability_than_the_cpu_has():
    """The real case, where this CPU shows it (AMX/AVX-512 with ATEN_CPU_CAPABILITY=default)."""
    probe = (
        "import torch; q = torch.zeros(1, 1, 256, 16, dtype=torch.bfloat16); "
        "torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, q, q, 0.0, True, scale=0.25)"
    )
    env = {"ATEN_CPU_CAPABILITY": "default", "PATH": "/usr/bin:/bin"}
    if subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode == 0:
        pytest.skip("this CPU's bf16 flash kernel runs under ATEN_CPU_CAPABILITY=default")
    script = (
        "import sys; sys.path.insert(0, 'tests'); import torch\n"
        "from factories import make_engine, make_model, make_tokenizer, mmlu_like_requests\n"
        "tok = make_tokenizer(); model = make_model('llama', len(tok)).to(torch.bfloat16)\n"
        "scores = make_engine(model).score(mmlu_like_requests(len(tok), prefix_len=300))\n"
        "print(len(scores))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("arch", ["qwen2", "gemma2", "gpt2"])  # grouped heads, softcapping, MHA
def test_debug_mode_checks_every_attention_call_against_float64(arch, monkeypatch):
    """PYTEST_MMLU_CHECK_ATTENTION=1: a correct run passes its checks; an attention that drops
    the prefix (a wrong merge) is caught at the first call, naming the layer."""

    monkeypatch.setenv(attention.CHECK_ENV, "1")
    monkeypatch.setattr("pytest_mmlu.engine.prefix.PREFIX_CHUNK", 16)  # several chunks, nested pieces
    tok = make_tokenizer()
    model = make_model(arch, len(tok))
    reqs, _ = nested_requests(len(tok))
    make_engine(model).score(reqs)  # every call checked, none off

    monkeypatch.setattr(compose, "merge", lambda out_a, lse_a, out_b, lse_b: (out_a, lse_a))
    with pytest.raises(attention.AttentionMismatch, match=r"layer 0 shared-prefix attention off by"):
        make_engine(model).score(reqs)


def test_only_a_refused_dtype_falls_back_other_kernel_errors_propagate(monkeypatch, fresh_probe):
    def broken(*args, **kwargs):
        raise RuntimeError("Expected query, key and value to have the same batch size")

    monkeypatch.setattr(cpu_flash, "KERNEL", broken)
    q = torch.zeros((2, 8, 16))
    with pytest.raises(RuntimeError, match="same batch size"):
        cpu_flash.part(q, q, q, 0.25, causal=True)
    assert cpu_flash.refuses.cache_info().currsize == 0  # nothing learned from a real error
