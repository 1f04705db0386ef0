"""The truth every scoring path is held to: one unpadded float64 forward per input row.

No batching, no padding, no shared prefix, no custom attention: a float64 copy of
the model runs each request's row (lm-eval's rule: ``(context + continuation)
[-(max_length + 1):][:-1]``) on its own with transformers' eager attention, and
the continuation's log-probabilities are summed in float64.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any


def float64_copy(model: Any) -> Any:
    """A float64 copy of ``model`` on the CPU with plain eager attention.

    A quantized weight (torchao's tensor subclasses) becomes its dequantized values, the
    weight its layer multiplies by, held in float64: the truth of the quantized model.
    """
    import torch

    truth = copy.deepcopy(model)
    for module in truth.modules():
        for name, weight in list(module.named_parameters(recurse=False)):
            if type(weight) not in (torch.Tensor, torch.nn.Parameter) and hasattr(weight, "dequantize"):
                setattr(module, name, torch.nn.Parameter(weight.dequantize().double(), requires_grad=False))
    truth = truth.to(device="cpu", dtype=torch.float64).eval()
    truth.config._attn_implementation = "eager"
    for module in truth.modules():  # sub-configs (vision towers, text configs) too
        cfg = getattr(module, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            cfg._attn_implementation = "eager"
    return truth


def truth_loglikelihoods(model: Any, requests: Sequence[Any], max_length: int, truth: Any = None) -> list[float]:
    """Each request's continuation log-likelihood from one unpadded float64 forward of its row.

    Requests sharing a row (a question's four choices) share that row's forward; only the
    positions they score reach the LM head where the model takes ``logits_to_keep`` (the
    model's own head, softcapping included).  ``truth`` may pass a :func:`float64_copy`.
    """
    import inspect

    import torch

    truth = truth if truth is not None else float64_copy(model)
    keeps_logits = "logits_to_keep" in inspect.signature(truth.forward).parameters
    # tuple(): contexts may be int32 arrays, where + would add elementwise, not concatenate.
    row_of = [(tuple(r.context) + tuple(r.continuation))[-(max_length + 1) :][:-1] for r in requests]
    scored: dict[tuple[int, ...], int] = {}
    for row, req in zip(row_of, requests):
        scored[row] = max(scored.get(row, 0), len(req.continuation))
    logprobs = {}
    with torch.inference_mode():
        for row, keep in scored.items():
            kwargs = {"logits_to_keep": keep} if keeps_logits else {}
            logits = truth(input_ids=torch.tensor([row]), use_cache=False, **kwargs).logits[0, -keep:]
            logprobs[row] = torch.log_softmax(logits.double(), dim=-1)
    out = []
    for row, req in zip(row_of, requests):
        positions = logprobs[row][-len(req.continuation) :]
        cont = torch.tensor(tuple(req.continuation))
        out.append(float(positions.gather(1, cont[:, None]).sum()))
    return out
