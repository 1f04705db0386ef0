"""The run's header lines: the model, its dtype and device as they will load, the data, and what
the session loads beyond the plain model (a quantization, a checkpoint quantized already, an
adapter, a device map)."""

from __future__ import annotations

from typing import Any

from ..memory.meters import make_meter
from ..models.devices import resolve_device
from ..models.errors import ModelLoadError
from ..models.plan import checkpoint_config
from ..models.quantization import pre_quantized
from ..models.variants import session_variant
from ..settings import Settings


def header_lines(sess: Any) -> list[str]:
    """``mmlu: model ..., dtype ..., device ...``, ``mmlu: data ...`` and the variant lines; the
    dtype is the session's load plan's (ModelLoadError where the device cannot be used)."""
    settings = sess.settings
    resolve_device(settings.device)  # a device that cannot be used: a usage error, now
    try:
        plan = sess.load_plan()
        dtype, device = plan.dtype, make_meter(plan.device, plan.shared).describe()
    except ModelLoadError:  # the tests that need the model fail, saying why
        dtype, device = settings.dtype, make_meter(resolve_device(settings.device)).describe()
    rev = f" @ {settings.revision}" if settings.revision else ""
    return [
        f"mmlu: model {settings.model}{rev}, dtype {dtype}, device {device}",
        f"mmlu: data {settings.data}",
        *variant_lines(settings),
    ]


def variant_lines(settings: Settings) -> list[str]:
    """Header lines for what the session loads beyond the plain model: a quantization, a
    checkpoint that is quantized already, an adapter, a device map."""
    lines = []
    variant = session_variant(settings)
    saved_as = pre_quantized(checkpoint_config(settings.model, settings.revision) or {})
    if saved_as is not None:
        lines.append(f"mmlu: quantization {saved_as['description']}")
    elif variant.quantization != "none":
        lines.append(f"mmlu: quantization {variant.quantization} (--mmlu-quantization)")
    if variant.adapter is not None:
        merged = ", merged" if variant.merge_adapter else ""
        lines.append(f"mmlu: adapter {variant.adapter}{merged}")
    if settings.device_map != "fit":
        lines.append(f"mmlu: device map {settings.device_map}")
    return lines
