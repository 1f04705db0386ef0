"""Tiny random models, a tiny real BPE tokenizer and synthetic MMLU data for fast tests."""

from __future__ import annotations

import csv
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_mmlu.mmlu.subjects import ALL_SUBJECTS

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "what",
    "which",
    "is",
    "the",
    "of",
    "a",
    "an",
    "and",
    "to",
    "in",
    "for",
    "value",
    "theorem",
    "cell",
    "market",
    "law",
    "energy",
]

# One small config per architecture family; vocab_size is filled in from the tokenizer.
_SMALL_MHA = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=1024
)
_SMALL = dict(_SMALL_MHA, num_key_value_heads=2)  # grouped-query attention
ARCH_CONFIGS: dict[str, dict] = {
    "llama": dict(_SMALL, model_type="llama"),
    "qwen2": dict(_SMALL, model_type="qwen2"),
    "mistral": dict(_SMALL, model_type="mistral", sliding_window=4096),
    "gemma": dict(_SMALL, model_type="gemma", head_dim=8),
    "phi": dict(_SMALL_MHA, model_type="phi"),
    "gpt2": dict(model_type="gpt2", n_embd=32, n_layer=2, n_head=4, n_positions=1024),
    "gpt_neox": dict(_SMALL_MHA, model_type="gpt_neox"),
    # Attention logit softcapping: shared-prefix attention takes its portable (matmul) path.
    "gemma2": dict(_SMALL, model_type="gemma2", head_dim=8, sliding_window=4096),
    # Sliding window shorter than the prompts: the engine must fall back to plain batches.
    "gemma2_sliding": dict(_SMALL, model_type="gemma2", head_dim=8, sliding_window=24),
}


def make_tokenizer(add_bos: bool = False):
    """A byte-level BPE trained on the synthetic vocabulary: real merges, real ' A' tokens."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<bos>", "<eos>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(12)) + "\nA. B. C. D. Answer: A B C D" for _ in range(300)]
    tok.train_from_iterator(corpus, trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A", special_tokens=[("<bos>", tok.token_to_id("<bos>"))]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def with_its_module(config) -> None:
    """pytester's in-process runs take out of ``sys.modules`` the modules they imported, while
    transformers' auto mapping keeps their classes; transformers 5.2 then looks a class's module
    up by name while building it (``_can_set_experts_implementation``) and fails. Put it back."""
    import importlib
    import sys

    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    module = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)].__module__
    if module not in sys.modules:
        importlib.import_module(module)


def make_model(arch: str, vocab_size: int, seed: int = 0):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = dict(ARCH_CONFIGS[arch])
    model_type = kwargs.pop("model_type")
    config = AutoConfig.for_model(
        model_type, vocab_size=vocab_size, bos_token_id=0, eos_token_id=1, pad_token_id=2, **kwargs
    )
    with_its_module(config)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


def save_model_folder(folder: Path, arch: str = "llama", add_bos: bool = False, seed: int = 0) -> Path:
    tokenizer = make_tokenizer(add_bos=add_bos)
    model = make_model(arch, len(tokenizer), seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def random_question(rng: random.Random, a_share: float = 0.25) -> list[str]:
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))) + "?"
    choices = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) for _ in range(4)]
    answer = "A" if rng.random() < a_share else rng.choice("BCD")
    return [text, *choices, answer]


def save_answer_a_model(folder: Path, boost: float, noise: float = 0.0, seed: int = 0) -> Path:
    """A tiny phi whose LM-head bias favours ' A' by ``boost``: on data where most answers are A
    it scores well; boost 0 plus weight noise is the 'deliberately degraded' release."""
    import torch

    tokenizer = make_tokenizer()
    model = make_model("phi", len(tokenizer), seed=seed)
    (a_id,) = tokenizer.encode(" A")
    with torch.no_grad():
        model.lm_head.bias[a_id] += boost
        if noise:
            gen = torch.Generator().manual_seed(seed + 1)
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * noise)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def save_head_adapter(base_dir, folder, bias_shift: float):
    """A LoRA fine-tune that also saves its own output head (``modules_to_save``, as many
    fine-tunes do), whose ' A' bias is moved by ``bias_shift``: -8 undoes the good model's
    preference for A (-16: it never answers A), a deliberately degraded fine-tune."""
    import peft
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with_its_module(AutoConfig.from_pretrained(base_dir))
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    model = peft.get_peft_model(base, peft.LoraConfig(r=2, target_modules=["dense"], modules_to_save=["lm_head"]))
    (a_id,) = make_tokenizer().encode(" A")
    with torch.no_grad():
        model.base_model.model.lm_head.modules_to_save["default"].bias[a_id] += bias_shift
    model.save_pretrained(folder)
    return folder


def write_mmlu_csvs(
    root: Path, subjects=ALL_SUBJECTS, n_test: int = 6, n_dev: int = 5, seed: int = 0, a_share: float = 0.25
) -> Path:
    """The original Hendrycks layout: root/{dev,test}/<subject>_<split>.csv, no header."""
    rng = random.Random(seed)
    for split, n in (("dev", n_dev), ("test", n_test)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for subject in subjects:
            with open(root / split / f"{subject}_{split}.csv", "w", newline="") as f:
                csv.writer(f).writerows(random_question(rng, a_share) for _ in range(n))
    return root


# A remote-code model (loaded with trust_remote_code) whose modeling file computes attention
# itself, as many hub models do: transformers' attention interface is never called.
REMOTE_CONFIG_PY = """
from transformers import LlamaConfig


class OwnAttentionConfig(LlamaConfig):
    model_type = "own_attention_llama"

    def __init__(self, use_mask=True, **kwargs):
        self.use_mask = use_mask  # False: causal only, the padding mask is never looked at
        super().__init__(**kwargs)
"""

REMOTE_MODELING_PY = '''
import torch
from transformers import LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaAttention, apply_rotary_pos_emb

from .configuration_own_attention import OwnAttentionConfig


class OwnAttention(LlamaAttention):
    """Softmax attention written out here; never asks transformers for an implementation."""

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, **kwargs):
        batch, length, _ = hidden_states.shape
        shape = (batch, length, -1, self.head_dim)
        q = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        k = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, *position_embeddings)
        k = k.repeat_interleave(self.num_key_value_groups, dim=1)
        v = v.repeat_interleave(self.num_key_value_groups, dim=1)
        scores = torch.matmul(q, k.transpose(2, 3)) * self.scaling
        causal = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
        allowed = causal[None, None]
        if self.config.use_mask and attention_mask is not None and attention_mask.dim() == 4:  # padding
            mask = attention_mask[..., -length:]
            allowed = allowed & (mask if mask.dtype == torch.bool else mask == 0)
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        probs = torch.softmax(scores.float(), dim=-1).to(v.dtype)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(batch, length, -1)
        return self.o_proj(out), None


class OwnAttentionForCausalLM(LlamaForCausalLM):
    config_class = OwnAttentionConfig

    def __init__(self, config):
        super().__init__(config)
        for layer in self.model.layers:
            layer.self_attn.__class__ = OwnAttention
'''


def save_remote_code_model(folder: Path, seed: int = 0, use_mask: bool = True) -> Path:
    """A llama-shaped model with ``auto_map`` to its own modeling file (needs trust_remote_code);
    ``use_mask=False``: its attention ignores the attention mask (causal only), as some do."""
    import json

    tokenizer = make_tokenizer()
    model = make_model("llama", len(tokenizer), seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / "configuration_own_attention.py").write_text(REMOTE_CONFIG_PY)
    (folder / "modeling_own_attention.py").write_text(REMOTE_MODELING_PY)
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="own_attention_llama",
        architectures=["OwnAttentionForCausalLM"],
        use_mask=use_mask,
        auto_map={
            "AutoConfig": "configuration_own_attention.OwnAttentionConfig",
            "AutoModelForCausalLM": "modeling_own_attention.OwnAttentionForCausalLM",
        },
    )
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


# Every architecture the exactness tests cover, sized for real 5-shot MMLU rows (2,000+
# tokens) with a real tokenizer's vocabulary. ALiBi models (bloom, mpt) have no positions.
_LONG_MHA = dict(_SMALL_MHA, max_position_embeddings=4096)
_LONG = dict(_LONG_MHA, num_key_value_heads=2)
LONG_ARCH_CONFIGS: dict[str, dict] = {
    "llama": _LONG,
    "qwen2": _LONG,
    "olmo2": _LONG,
    "mistral": dict(_LONG, sliding_window=4096),
    "gemma": dict(_LONG, head_dim=8),
    "gemma2": dict(_LONG, head_dim=8, sliding_window=4096),  # logit softcapping
    "starcoder2": dict(_LONG, sliding_window=None),
    "phi": _LONG_MHA,
    "gpt_neox": _LONG_MHA,
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=4096),
    "falcon": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=4096),
    "bloom": dict(hidden_size=32, n_layer=2, n_head=4),
    "mpt": dict(d_model=32, n_heads=4, n_layers=2, max_seq_len=4096, expansion_ratio=2),
}


def save_mmlu_bpe_tokenizer(folder: Path, mmlu_zip: Path, vocab_size: int = 4096) -> Path:
    """A byte-level BPE (GPT-2 style) trained on real MMLU's dev and val questions, saved in
    ``folder``: real merges over real text, with a vocabulary small enough that lm-eval's
    full-vocabulary logits on 2,000+-token rows cost little (5-shot high_school_us_history
    rows come to 2,700-3,000 tokens)."""
    import csv
    import io
    import zipfile

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = []
    with zipfile.ZipFile(mmlu_zip) as zf:
        for name in sorted(zf.namelist()):
            if name.endswith(".csv") and ("/dev/" in name or "/val/" in name):
                with zf.open(name) as f:
                    texts += [" ".join(row) for row in csv.reader(io.TextIOWrapper(f, encoding="utf-8"))]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", model_max_length=4096
    )
    fast.save_pretrained(folder)
    return folder


def save_long_arch_model(folder: Path, arch: str, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A tiny random ``arch`` model with the tokenizer saved in ``tokenizer_dir``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = AutoConfig.for_model(
        arch,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **LONG_ARCH_CONFIGS[arch],
    )
    with_its_module(config)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # A random model puts A-D within hundredths of a nat, where half-precision noise picks the
    # answer; larger output rows for the four letters give answers a dtype cannot reorder.
    letters = [tokenizer.encode(f" {letter}", add_special_tokens=False)[-1] for letter in "ABCD"]
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head[letters] = torch.randn((4, head.shape[1]), generator=torch.Generator().manual_seed(seed))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def save_llama_sentencepiece_tokenizer(folder: Path, mmlu_zip: Path, vocab_size: int = 4096) -> Path:
    """A SentencePiece-style llama tokenizer that adds BOS, trained on real MMLU's dev and val
    questions in their prompt layout: BPE with byte fallback behind a Metaspace pre-tokenizer
    (the string's first word gets a "▁"; the whole string is one piece at encoding, as in
    llama's tokenizer.json), wrapped as ``LlamaTokenizer`` with ``add_bos_token=True``.

    Trained on whole prompt lines, its merges cross line breaks ("\\nAnswer:", "\\n\\n"):
    the hard case for splitting a prompt into separately encoded pieces."""
    import csv
    import io
    import json
    import zipfile

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer

    texts = []
    with zipfile.ZipFile(mmlu_zip) as zf:
        for name in sorted(zf.namelist()):
            if name.endswith(".csv") and ("/dev/" in name or "/val/" in name):
                with zf.open(name) as f:
                    for row in csv.reader(io.TextIOWrapper(f, encoding="utf-8")):
                        texts.append(
                            f"{row[0]}\nA. {row[1]}\nB. {row[2]}\nC. {row[3]}\nD. {row[4]}\nAnswer: {row[5]}\n\n"
                        )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        limit_alphabet=200,
        special_tokens=["<unk>", "<s>", "</s>", *(f"<0x{i:02X}>" for i in range(256))],
    )
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tok.train_from_iterator(texts, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    llama = LlamaTokenizer(vocab=model["vocab"], merges=merges, add_bos_token=True, model_max_length=4096)
    llama.save_pretrained(folder)
    return folder


# -- the engine, on tiny models -------------------------------------------------------------------
def reference_scores(model, requests, max_length):
    """lm-eval's HF computation, one request at a time, full logits."""
    import torch

    out = []
    with torch.inference_mode():
        for req in requests:
            tokens = (tuple(req.context) + tuple(req.continuation))[-(max_length + 1) :][:-1]
            logits = model(torch.tensor([tokens])).logits[0].float()
            logprobs = torch.log_softmax(logits, -1)[-len(req.continuation) :]
            cont = torch.tensor(req.continuation)
            ll = logprobs.gather(1, cont[:, None]).sum().item()
            greedy = bool((logprobs.argmax(-1) == cont).all())
            out.append((ll, greedy))
    return out


def make_engine(model, rows=None, max_length=None, limit=None):
    """The engine on a tiny model, under ``limit`` bytes (else 8 GiB over what is live now)."""
    from pytest_mmlu.engine import ScoringEngine, resolve_max_length
    from pytest_mmlu.engine.planner import BatchPlanner, RowCost
    from pytest_mmlu.memory.cpu import CpuMeter

    meter = CpuMeter()
    baseline = meter.current()
    cost = RowCost.from_config(model.config, 4)

    def planner():
        return BatchPlanner(
            cost,
            baseline,
            limit or baseline + 8 * 2**30,
            "cpu",
            budget_declared=limit is not None,
            max_batch_tokens=4096,
            fixed_rows=rows,
        )

    return ScoringEngine(model, max_length or resolve_max_length(model.config), planner, meter)


def mmlu_like_requests(vocab, n_groups=3, per_group=5, prefix_len=60, seed=0, multi=False):
    """Groups sharing a long prefix (few-shot block), each row with 4 one-token choices."""
    from pytest_mmlu.mmlu.prompts import TokenRequest

    rng = random.Random(seed)
    reqs = []
    for _ in range(n_groups):
        prefix = [rng.randrange(3, vocab) for _ in range(prefix_len)]
        for _ in range(per_group):
            ctx = tuple(prefix + [rng.randrange(3, vocab) for _ in range(rng.randint(3, 30))])
            for choice in range(4):
                cont = (10 + choice,) if not multi else tuple(rng.randrange(3, vocab) for _ in range(rng.randint(1, 3)))
                reqs.append(TokenRequest(ctx, cont))
    # A few loners with no shared prefix, scored in the plain group.
    for _ in range(3):
        reqs.append(TokenRequest(tuple(rng.randrange(3, vocab) for _ in range(20)), (7,)))
    return reqs


def nested_requests(vocab):
    """A few-shot block shared by all rows, then passages shared by 3, 2, 1 and 4 rows."""
    from pytest_mmlu.mmlu.prompts import TokenRequest

    rng = random.Random(5)
    shots = [rng.randrange(3, vocab) for _ in range(80)]
    reqs, unique = [], set()
    for passage_rows in (3, 2, 1, 4):
        passage = [rng.randrange(3, vocab) for _ in range(50)]
        for _ in range(passage_rows):
            ctx = tuple(shots + passage + [rng.randrange(3, vocab) for _ in range(rng.randint(4, 9))])
            reqs += [TokenRequest(ctx, (10 + c,)) for c in range(4)]
            unique.update(ctx[:i] for i in range(1, len(ctx) + 1))
    return reqs, unique


# -- real MMLU and lm-eval itself (the agreement tests) -------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
AGREEMENT_SUBJECTS = ["abstract_algebra", "college_medicine", "high_school_us_history"]
AGREEMENT_LIMIT = 2


def real_mmlu_zip() -> Path:
    path = Path(os.environ.get("PYTEST_MMLU_REAL_DATA", ROOT.parent / "shared" / "mmlu" / "mmlu.zip"))
    if not path.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"real MMLU not found at {path}")
        pytest.skip(f"real MMLU not found at {path} (set PYTEST_MMLU_REAL_DATA)")
    return path


def run_lm_eval(model, data, subjects=AGREEMENT_SUBJECTS, limit=AGREEMENT_LIMIT, tasks=None):
    """lm-eval's own 5-shot ``mmlu_<subject>`` tasks (``tasks``, else built for ``subjects``)
    through ``model``: each question's four log-likelihoods by (subject, index)."""
    from lm_eval import simple_evaluate

    from pytest_mmlu.lm_eval_adapter import bare_task_manager, mmlu_tasks

    out = simple_evaluate(
        task_manager=bare_task_manager(),
        model=model,
        tasks=tasks if tasks is not None else list(mmlu_tasks(data, subjects).values()),
        num_fewshot=5,
        limit=limit,
        log_samples=True,
        bootstrap_iters=0,
    )
    return {
        (task.removeprefix("mmlu_"), s["doc_id"]): [r[0][0] for r in s["resps"]]
        for task, samples in out["samples"].items()
        for s in samples
    }


def import_graph():
    """scripts/import_graph.py as a module: the layer map and the import rules."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("import_graph", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return sys.modules["import_graph"]


# -- results and identities as a run records them (figures made up) -------------------------------
def make_result(questions, *, shots=0, limit=None, label=None, subjects=None, **fields):
    """An EvaluationResult of ``questions`` (QuestionResults); what is not given is made up:
    fp32 on the CPU, one row per batch, no budget."""
    from pytest_mmlu.mmlu.results import EvaluationResult

    subjects = tuple(subjects or dict.fromkeys(q.subject for q in questions))
    made_up = dict(
        peak_memory_bytes=0,
        budget_bytes=None,
        batch_size=1,
        batch_sizes=[1],
        seconds=0.0,
        tokens=0,
        device="cpu",
        dtype="float32",
    )
    return EvaluationResult(
        subjects=subjects,
        shots=shots,
        limit=limit,
        label=label or ",".join(subjects),
        questions=list(questions),
        **{**made_up, **fields},
    )


def made_up_identity(questions, shots, **fields):
    """An evaluation's identity (``identity.evaluation_identity``) of these (subject, index)
    questions; model, software and the rest made up, the same for every call."""
    from pytest_mmlu.identity import evaluation_identity

    made_up = dict(
        model="sha256:m",
        quantization="none",
        adapter=None,
        merge_adapter=False,
        dtype="float32",
        device="cpu",
        prompt_format=None,
        data="d",
        scoring=1,
        software={"torch": "2"},
    )
    return evaluation_identity(questions=list(questions), shots=shots, **{**made_up, **fields})


# -- one verdict on every path: what the differential tests compare --------------------------------
def verdict_status(record) -> tuple[str, tuple[str, ...]]:
    """A judged record as (passed/failed/skipped/xfailed, the kinds of its failing gates)."""
    from pytest_mmlu.judge import record_failing_kinds

    outcome = record["outcome"]
    word = outcome if outcome in ("passed", "skipped", "xfailed") else "failed"
    return word, tuple(sorted(record_failing_kinds(record)))


def verdicts_of(report_path) -> dict[str, tuple]:
    """Each test of a JSON report (by its name in its file) and its verdict status."""
    report = json.loads(Path(report_path).read_text())
    return {t["nodeid"].split("::", 1)[1]: verdict_status(t) for t in report["tests"]}


def make_baselines(pytest_run, folder: Path) -> tuple[Path, Path]:
    """The last release's baseline of a differential test, as our report and as the lm-eval
    files the same run writes: its ``test_nr_pass`` and ``test_nr_fail``, evaluated afresh."""
    baseline, lm_eval = folder / "baseline.json", folder / "lm-eval"
    made = pytest_run(
        "-k",
        "nr_pass or nr_fail",
        "--mmlu-no-cache",
        f"--mmlu-baseline={baseline}",
        "--mmlu-update-baseline",
        f"--mmlu-report-lm-eval={lm_eval}",
    )
    made.assert_outcomes(passed=2)
    return baseline, lm_eval


def run_cli(*args):
    """``pytest-mmlu ARGS`` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "pytest_mmlu.cli", *map(str, args)], capture_output=True, text=True)


def compared_verdicts(stdout: str) -> dict[str, tuple]:
    """The verdicts ``pytest-mmlu compare`` prints, as ``verdicts_of`` gives a report's."""
    found = {}
    for line in stdout.split("\nverdicts:\n")[1].splitlines():
        nodeid, rest = line.strip().split(": ", 1)
        word, _, kinds = rest.partition(" (")
        found[nodeid.split("::", 1)[1]] = (word.lower(), tuple(re.findall(r"[\w-]+", kinds)))
    return found
