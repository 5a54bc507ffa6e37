"""Stages run one after another in one process hand the memory they freed back to the system."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from alol.models.memory import _malloc_trim, release_memory
from alol.pipeline import Stage

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/statm").exists() or _malloc_trim() is None,
    reason="measures resident memory through /proc and glibc's malloc_trim",
)

MIB = 2**20


def resident_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def fragment_the_heap() -> list[torch.Tensor]:
    """2,000 tensors of 120 KB (under glibc's mmap threshold, so on the heap), every other one
    kept, as a stage's activations sit between longer-lived allocations: the freed half leaves
    holes between the kept half, which the allocator keeps for reuse."""
    tensors = [torch.ones(30_000) for _ in range(2000)]
    return tensors[::2]


def kept_bytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.untyped_storage().nbytes() for t in tensors)


def resident_after_release() -> int:
    """Resident memory with no freed page kept, so that what a stage touches shows."""
    release_memory()
    return resident_bytes()


def test_memory_a_stage_freed_stays_resident_until_released():
    before = resident_after_release()
    kept = fragment_the_heap()
    freed_and_kept = resident_bytes() - before - kept_bytes(kept)
    assert freed_and_kept > 100 * MIB, "the allocator kept the freed tensors"
    release_memory()
    assert resident_bytes() - before - kept_bytes(kept) < 30 * MIB


def test_a_stage_hands_what_it_freed_back_before_the_next_one_starts():
    before = resident_after_release()
    kept = Stage("fragment", "fragments the heap", fragment_the_heap).run()
    assert resident_bytes() - before - kept_bytes(kept) < 30 * MIB
