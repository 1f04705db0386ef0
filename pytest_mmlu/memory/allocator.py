"""The allocator under a memory budget: glibc's thresholds fixed so that resident memory follows
what is live (and small while a model loads), and what is free handed back before each
evaluation (glibc's heap on CPU, torch's cache on CUDA).
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def _libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: the allocator's defaults stand
        return None


HEAP_MMAP_THRESHOLD = 32 << 20


# Freed memory the heap may keep resident at its top: the planner counts it in every batch.
HEAP_TRIM_THRESHOLD = 64 << 20


# While a model loads: glibc's own initial thresholds, so that every weight-sized tensor,
# kept or temporary, gets a mapping of its own.
LOADING_THRESHOLD = 128 << 10


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def configure_cpu_allocator() -> None:
    """Fix glibc's thresholds so that resident memory follows what is live, at speed.

    Tensors of 32 MiB and more get their own mapping, returned to the OS when
    freed; smaller ones reuse freed heap blocks, and the heap is trimmed once 64 MiB
    at its top are free.  Fixed values, not glibc's history-dependent dynamic
    ones.  A small threshold (1 MiB, tried) mapped almost every tensor anew: 4 M
    page faults, a quarter of W5's time.
    Set by ``load_model`` for a CPU model, so every way in (the plugin, the bench,
    the lm-eval adapter) evaluates with the same allocator.
    """
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD)


@contextmanager
def cpu_allocator_for_loading() -> Iterator[None]:
    """Load a CPU model with small thresholds, then set the evaluation's (above).

    Quantizing at load, converting a dtype or merging an adapter frees full-precision
    copies of the weights.  Left on the heap, they are holes between the tensors kept;
    the evaluation's activations then land in them page after page, and freed pages
    in the middle of the heap stay resident.  SmolLM2 int8 loaded after the fp32
    model evaluated 120 questions at 0.78 GiB (heap 650 MiB free), breaching the
    example's 768 MiB; loaded this way, 0.71-0.72 GiB (17-24 MiB free).  glibc maps a block
    only when its free lists and heap top cannot serve it, so the top is trimmed
    promptly while loading too.
    """
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, LOADING_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, LOADING_THRESHOLD)
    try:
        yield
    finally:
        configure_cpu_allocator()


def release_cpu_memory() -> None:
    """Hand the heap's free pages back to the OS (``malloc_trim``)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def release_memory(device: str) -> None:
    """Free what nothing uses: Python's garbage, then the free memory the allocator keeps
    (glibc's heap on CPU, torch's cache on CUDA).  Before an evaluation, so that its
    baseline is what is live now; after an out-of-memory error, before the retry."""
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
    else:
        release_cpu_memory()
