"""Several processes (`accelerate launch`, `torchrun`) running the same pipeline code.

`gather_in_order` splits a pass over examples between the processes and hands every process
all the results; `on_main_process` lets the main process write an artifact while the others
wait, so no process reads a file before it exists. Outside a launcher there is one process and
both are plain function calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def process_state():
    """accelerate's view of this process: rank, process count, device (one process if not launched).

    The first call joins the process group that the launcher set up in the environment.
    `ACCELERATE_USE_CPU=true` (what `accelerate launch --cpu` sets) makes several processes
    on a machine without GPUs one gloo group, as transformers' TrainingArguments does.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def is_main_process() -> bool:
    return process_state().is_main_process


def wait_for_everyone() -> None:
    """A barrier; free with one process."""
    process_state().wait_for_everyone()


def leave_process_group() -> None:
    """End of a launched command that succeeded: wait for every process, then tear the group
    down. A process that exits with its group alive makes PyTorch warn, and gloo can abort it
    while another process still runs a collective. Not after an error: a process that failed
    would leave the others waiting at the barrier."""
    state = process_state()
    if state.num_processes > 1:
        state.wait_for_everyone()
        state.destroy_process_group()


def on_main_process(write: Callable[[], T]) -> T | None:
    """Run `write()` on the main process only; every process returns once it has finished.

    Returns `write()`'s result on the main process and None on the others.
    """
    result = write() if is_main_process() else None
    wait_for_everyone()
    return result


def gather_in_order(count: int, compute: Callable[[list[int]], list[T]]) -> list[T]:
    """Results for `range(count)`, each computed by exactly one process, in index order on all.

    `compute(indices)` returns one picklable result per index it is given. Process `r` of `w`
    computes indices `r, r + w, r + 2w, ...` (`alol.models.generate.shard_indices`), so no example is
    computed twice or padded in, however `count` divides between the processes.
    """

    state = process_state()
    mine = shard_indices(count, state.process_index, state.num_processes)
    results = compute(mine)
    if len(results) != len(mine):
        raise ValueError(f"compute returned {len(results)} results for {len(mine)} indices")
    if state.num_processes == 1:
        return results
    from accelerate.utils import gather_object

    ordered: list[Any] = [None] * count
    for index, result in gather_object(list(zip(mine, results, strict=True))):
        ordered[index] = result
    return ordered


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """This process's share of `range(n)`: every `world_size`-th index from `rank`.

    The shares are disjoint and cover every index exactly once, with no padding duplicates,
    so gathering them needs no de-duplication (unlike a `DistributedSampler`).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"rank must be in [0, world_size) and world_size at least 1, got rank={rank}, world_size={world_size}"
        )
    return list(range(rank, n, world_size))
