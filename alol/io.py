"""How artifacts reach the disk: atomically, and under several processes by one of them.

Atomic writes: a crash at any moment leaves the old file or the new one, never a torn one
(temporary file beside the target, fsync, one rename).

Several processes (`accelerate launch`, `torchrun`): every process runs the same pipeline code.
`gather_in_order` splits a pass over examples between them and hands every process all the
results; `on_main_process` lets the main process write an artifact while the others wait, so
no process reads a file before it exists. Outside a launcher there is one process and both are
plain function calls.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
        fsync_directory(path.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp_path)` and move the result into place atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n")


def append_jsonl(path: str | Path, obj: dict[str, Any]) -> None:
    """Append one line and flush it; a reader skips a final line torn by a crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(obj, default=float) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def replace_directory(finished: str | Path, target: str | Path) -> Path:
    """Move the completely written folder `finished` to `target`, replacing an older `target`.

    Each rename is atomic, so `target` is never a half-written folder. (Replacing an existing
    folder takes two renames; a crash between them leaves the old copy beside the target as
    `.<name>.replaced`, which the next call removes.)
    """
    finished, target = Path(finished), Path(target)
    replaced = target.with_name(f".{target.name}.replaced")
    shutil.rmtree(replaced, ignore_errors=True)
    if target.exists():
        target.rename(replaced)
    finished.rename(target)
    fsync_directory(target.parent)
    shutil.rmtree(replaced, ignore_errors=True)
    return target


def fsync_directory(directory: str | Path) -> None:
    """Make a rename inside `directory` durable (survive a power cut, not only a crash)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Several processes


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
    computes indices `r, r + w, r + 2w, ...` (`alol.generate.shard_indices`), so no example is
    computed twice or padded in, however `count` divides between the processes.
    """
    from alol.generate import shard_indices

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
