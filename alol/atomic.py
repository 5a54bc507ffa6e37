"""How artifacts reach the disk: atomically, so a crash at any moment leaves the old file or
the new one, never a torn one (temporary file beside the target, fsync, one rename)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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
        tmp_path.chmod(0o666 & ~current_umask())  # as open() would make it; mkstemp makes 0600
        with open(tmp_path, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
        fsync_directory(path.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


def current_umask() -> int:
    """The process's umask (reading it means setting it; it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
