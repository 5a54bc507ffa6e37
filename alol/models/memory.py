"""Handing memory back to the system between stages that run in one process.

A stage's models and batches are freed when it returns, but the C allocator (glibc) keeps the
freed heap for reuse, and the next stage's tensors, of other shapes, fragment it further. On
the HH benchmark (SmolLM2-135M, LoRA, 2-core CPU) one process held up to 11.4 GB resident
training wbc and 22.3 GB training dpo after it, where kto in a fresh process held 13.2 GB; a
finished wbc, dpo or kto stage left 7.6, 13.7 and 10.8 GB resident, of which `malloc_trim`
handed back all but 0.8 to 1.2 GB. Releasing after every stage bounds the process by its
largest stage rather than by their sum.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Callable

import torch


def release_memory() -> None:
    """Free what the last stage left unreachable and hand the allocators' free memory back."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, which returns free pages from the middle of the heap too; other C
    libraries (macOS, musl) have none and give memory back on their own terms. Looked up once:
    `find_library` runs `ldconfig` in a subprocess."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    return getattr(ctypes.CDLL(name), "malloc_trim", None)
