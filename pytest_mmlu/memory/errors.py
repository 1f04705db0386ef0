"""What can stop an evaluation for want of memory, each with its one line."""

from __future__ import annotations

import math

from ..sizes import format_gib


class BudgetTooSmall(Exception):
    """Even one row does not fit: the message gives the minimum that would work."""

    def __init__(self, budget: int, minimum: int, device: str, detail: str) -> None:
        self.budget, self.minimum, self.device = budget, minimum, device
        super().__init__(
            f"MMLU memory budget {format_gib(budget)} is too small on {device}: batch 1 needs about "
            f"{format_gib(minimum)} ({detail}); the minimum that would work is "
            f"{format_gib(math.ceil(minimum / 2**20 / 64) * 64 * 2**20)}"
        )


class MeterUnavailable(Exception):
    """This platform offers no way to measure the process's memory (the message says what to install)."""


class OutOfMemory(Exception):
    """The device ran out of memory where no batch can shrink (one row, or a prefix pass)."""

    def __init__(self, device: str, where: str, limit: int, budget_declared: bool) -> None:
        bound = f"budget {format_gib(limit)}" if budget_declared else f"planned limit {format_gib(limit)}"
        super().__init__(
            f"MMLU evaluation ran out of memory on {device} {where} ({bound}): one row cannot be "
            f"split further; give the device more free memory, a larger budget, a smaller dtype, "
            f"or shorter prompts (fewer shots)"
        )


def is_oom(exc: BaseException) -> bool:
    """True for CUDA OOM and CPU allocation failures (both surface as RuntimeError/MemoryError)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "DefaultCPUAllocator" in text
    )
