"""One identity of an evaluation, and the one rule that says whether two are the same.

An identity says exactly what was evaluated. It is a plain dict (JSON as it is, carried by
every report entry, cache entry, xdist record and lm-eval file we write):

==============  =========================================================================
``model``       the model's content: ``sha256:<hex>`` over every file of its folder that
                may be loaded, or ``hub:<commit>`` (``content.py``)
``quantization``  ``none``, ``int8``, ``int4``, ``fp8``, ``nf4``, ``bnb-int8`` (a checkpoint
                saved quantized is ``none``: its quantization is in its content)
``adapter``     the PEFT adapter's content (``sha256:<hex>``), or None: no adapter
``adapter_name``  the adapter's folder name, or None: which fine-tune it is (its content may
                change from release to release; one test may gate several)
``merge_adapter``  the adapter merged into the weights
``dtype``       the activations' dtype as loaded
``device``      ``cpu``, or ``cuda:<GPU model>`` (the kind, never the index)
``prompt``      None (lm-eval's plain prompts), else the chat template's sha256 (None:
                none), few-shot turns (None without a template) and system instruction
``data``        fingerprint of the evaluated subjects' questions (dev and test, by content);
                of a task evaluation, of every request's prompt and continuation and target
``questions``   sha256 of the evaluated question ids (``subject/index``, as a set; a task's
                documents are ``task/doc_id``)
``n``           how many questions
``shots``       few-shot examples per question (a task evaluation: per task)
``task``        None (MMLU), else the lm-eval task evaluation: its name, the metric judged,
                each task's version and configuration hash, the include folder's content
``scoring``     pytest-mmlu's scoring version
``software``    the version of every library that can change a score
==============  =========================================================================

A field that is missing is unknown, and unknown is never the same as anything.

Every lookup asks :func:`difference` with its :class:`Lookup`, which names the fields that
must be the same for it (``LOOKUPS``; the README has the table). The answer is None (the
same) or a :class:`Difference` naming the field, and the lookup refuses with it: a cache
miss, a missing baseline, a refused merge.

Light on purpose: no torch, no transformers (the environment's part is ``software.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .identity_words import PLAIN_NAMES, UNKNOWN, canonical, software_words, task_words, words
from .models.variants import QUANTIZATIONS
from .prompt_identity import prompt_difference, prompt_identity

Identity = dict[str, Any]


FIELDS = (
    "model",
    "quantization",
    "adapter",
    "adapter_name",
    "merge_adapter",
    "dtype",
    "device",
    "prompt",
    "data",
    "questions",
    "shots",
    "task",
    "scoring",
    "software",
)


@dataclass(frozen=True)
class Lookup:
    """One kind of lookup: its name in messages and the fields that must be the same.
    ``presence``: fields compared only by being set or not (an adapter: the candidate
    release's fine-tune is another adapter than the baseline's, but both are adapters)."""

    name: str
    fields: frozenset[str]
    presence: frozenset[str] = frozenset()


def _fields(*names: str, but: Iterable[str] = ()) -> frozenset[str]:
    chosen = set(names or FIELDS) - set(but)
    unknown = chosen - set(FIELDS)
    assert not unknown, unknown
    return frozenset(chosen)


# What counts as the same evaluation, per lookup (README "What counts as the same evaluation").
CACHE = Lookup("cached result", _fields())


MERGE = Lookup("shard", _fields(but=("questions",)))  # the shards' questions partition the whole


BASELINE = Lookup(
    "baseline",
    _fields(
        "quantization",
        "adapter",
        "adapter_name",
        "merge_adapter",
        "dtype",
        "prompt",
        "data",
        "questions",
        "shots",
        "task",
    ),
    presence=frozenset({"adapter"}),
)


FULL = Lookup(
    "full-precision reference", _fields(but=("quantization", "adapter", "adapter_name", "merge_adapter", "dtype"))
)


LM_EVAL_RUN = Lookup("lm-eval run", _fields(but=("data", "questions")))  # one run holds many subjects
# lm-eval tasks: one run holds many tasks, each with its own few-shot count
LM_EVAL_TASK_RUN = Lookup("lm-eval task run", _fields(but=("data", "questions", "shots", "task")))


# A baseline update replaces the entry of the same variant, and keeps the other variants'.
VARIANT = Lookup(
    "variant", _fields("quantization", "adapter", "adapter_name", "merge_adapter"), presence=frozenset({"adapter"})
)


LOOKUPS = {lookup.name: lookup for lookup in (CACHE, MERGE, BASELINE, FULL, LM_EVAL_RUN, LM_EVAL_TASK_RUN, VARIANT)}


@dataclass(frozen=True)
class Difference:
    """How two identities differ for a lookup: the field and each side's value, in words."""

    field: str
    theirs: str
    ours: str
    their_name: str = "the other"
    our_name: str = "this evaluation"

    @property
    def text(self) -> str:
        return f"{self.field} differs: {self.theirs} in {self.their_name}, {self.ours} in {self.our_name}"

    @property
    def phrase(self) -> str:
        """What a refusal says was other: ``other data (fingerprint differs)``, ``other prompts
        (baseline: no chat template; this run: ...)``, ``another dtype (bfloat16 in ...)``."""
        if self.field == "data":
            return "other data (fingerprint differs)"
        if self.field == "questions":
            counts = (self.theirs.split(" ")[0], self.ours.split(" ")[0])
            return "other questions" + (
                "" if counts[0] == counts[1] else f" ({counts[0]} in {self.their_name}, {counts[1]} in {self.our_name})"
            )
        if self.field == "prompt":
            return f"other prompts ({self.their_name}: {self.theirs}; {self.our_name}: {self.ours})"
        return (
            f"another {PLAIN_NAMES.get(self.field, self.field)} ({self.theirs} in {self.their_name}, "
            f"{self.ours} in {self.our_name})"
        )

    def __str__(self) -> str:
        return self.text


def difference(
    theirs: Mapping[str, Any] | None,
    ours: Mapping[str, Any] | None,
    lookup: Lookup,
    names: tuple[str, str] = ("the other", "this evaluation"),
) -> Difference | None:
    """None when ``theirs`` and ``ours`` are the same evaluation for ``lookup``, else the first
    field (in ``FIELDS`` order) that differs or is unknown on either side."""
    theirs, ours = theirs or {}, ours or {}
    for name in FIELDS:
        if name not in lookup.fields:
            continue
        a, b = theirs.get(name, UNKNOWN), ours.get(name, UNKNOWN)
        if a is UNKNOWN or b is UNKNOWN:
            return Difference(name, words(name, a), words(name, b), *names)
        if name in lookup.presence:
            a, b = a is not None, b is not None
            if a != b:
                return Difference(
                    name, "an adapter" if a else "no adapter", "an adapter" if b else "no adapter", *names
                )
            continue
        if canonical(a) != canonical(b):
            if name == "software":
                return Difference(name, *software_words(a, b), *names)
            if name == "prompt":
                prompt_words = prompt_difference(a, b)
                if prompt_words is None:
                    continue  # recorded differently, rendered alike
                return Difference(name, *prompt_words, *names)
            if name == "task":
                return Difference(name, *task_words(a, b), *names)
            if name == "questions":
                n_a, n_b = theirs.get("n"), ours.get("n")
                return Difference(name, f"{n_a} questions ({str(a)[:12]})", f"{n_b} questions ({str(b)[:12]})", *names)
            return Difference(name, words(name, a), words(name, b), *names)
    return None


def run_key(identity: Mapping[str, Any], lookup: Lookup) -> str:
    """The part of an identity a lookup compares, as text: identities with one key are not told
    apart by it (what groups evaluations, as into one lm-eval run; a field unknown on both
    sides groups alike here, though ``difference`` never calls it the same)."""
    return canonical({name: identity.get(name, "<unknown>") for name in sorted(lookup.fields)})


# -- building identities ------------------------------------------------------------------------
def questions_digest(ids: Iterable[tuple[str, int]]) -> tuple[str, int]:
    """sha256 and count of a set of question ids (``subject/index``); order does not count."""
    unique = sorted({f"{subject}/{int(index)}" for subject, index in ids})
    return hashlib.sha256("\n".join(unique).encode()).hexdigest(), len(unique)


def with_questions(identity: Mapping[str, Any], ids: Iterable[tuple[str, int]]) -> Identity:
    """``identity`` for another set of questions (a merged whole, a lookup by question)."""
    digest, n = questions_digest(ids)
    return {**identity, "questions": digest, "n": n}


def evaluation_identity(
    *,
    model: str | None,
    quantization: str,
    adapter: str | None,
    merge_adapter: bool,
    dtype: str,
    device: str,
    prompt_format: Mapping[str, Any] | None,
    adapter_name: str | None = None,
    data: str,
    questions: Iterable[tuple[str, int]],
    shots: int | Mapping[str, int],
    scoring: int,
    software: Mapping[str, Any],
    task: Mapping[str, Any] | None = None,
) -> Identity:
    """The identity of one evaluation (a ``model`` of None is unknown: left out)."""
    identity: Identity = {
        "quantization": quantization,
        "adapter": adapter,
        "adapter_name": adapter_name if adapter is not None else None,
        "merge_adapter": bool(merge_adapter and adapter is not None),
        "dtype": dtype,
        "device": device,
        "prompt": prompt_identity(prompt_format),
        "data": data,
        "shots": shots if isinstance(shots, int) else dict(shots),
        "task": None if task is None else dict(task),
        "scoring": scoring,
        "software": dict(software),
    }
    if model is not None:
        identity["model"] = model
    return with_questions(identity, questions)


def of_entry(entry: Mapping[str, Any]) -> Identity:
    """The identity of a report entry: recorded, or for an entry written before identities
    were recorded, what its own fields say (model, device and software stay unknown)."""
    recorded = entry.get("identity")
    label = str(entry.get("variant") or "full")
    if recorded is not None:
        # recorded before adapters were named in identities: the name its variant label gives;
        # before lm-eval tasks were gated: MMLU
        return {"adapter_name": _adapter_name_in(label), "task": None, **recorded}

    first = label.split(" + ")[0]
    legacy: Identity = {
        "quantization": first if first in QUANTIZATIONS else "none",
        "merge_adapter": "(merged)" in label,
        "dtype": entry.get("dtype"),
        "prompt": prompt_identity(entry.get("prompt_format")),
        "data": entry.get("data_fingerprint"),
        "shots": entry.get("shots"),
        "task": None,
        "scoring": None,
    }
    # An old entry names its adapter, not its content: known to be there, of unknown content.
    legacy["adapter"] = "unknown content (recorded before identities)" if "adapter " in label else None
    legacy["adapter_name"] = _adapter_name_in(label)
    return with_questions(legacy, ((q["subject"], q["index"]) for q in entry.get("questions", [])))


def _adapter_name_in(label: str) -> str | None:
    """The adapter a variant label names (``"int8 + adapter lora-a (merged)"``: ``lora-a``)."""
    for part in label.split(" + "):
        if part.startswith("adapter "):
            return part.removeprefix("adapter ").removesuffix(" (merged)")
    return None
