"""Stage bookkeeping: `<stage dir>/stage.json` records a fingerprint of the stage's inputs and
whether the stage finished, failed or was interrupted, so a rerun skips a stage whose inputs
are unchanged, resumes one that stopped, and moves a folder left by other inputs aside (never
deleting anything but a lone stage.json). It reads and writes only that marker, and only on
the main process.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alol.atomic import write_json
from alol.distributed import is_main_process, on_main_process

logger = logging.getLogger(__name__)

MARKER = "stage.json"


class StageInterrupted(KeyboardInterrupt):
    """Ctrl-C during a stage; names the stage and its folder, where a rerun picks it up."""

    def __init__(self, name: str, directory: Path):
        super().__init__(f"{name} interrupted ({directory})")
        self.name = name
        self.directory = directory


def stage_done(directory: Path, fingerprint: str) -> bool:
    state = stage_record(directory)
    return state.get("fingerprint") == fingerprint and state.get("status") == "done"


def stage_record(directory: Path) -> dict[str, Any]:
    """What a stage's marker holds: its fingerprint, status and summary (empty without one)."""
    marker = directory / MARKER
    return json.loads(marker.read_text()) if marker.exists() else {}


@contextmanager
def running_stage(directory: Path, fingerprint: str, name: str) -> Iterator[None]:
    """Mark the stage running for the block, and failed or interrupted when the block raises:
    stage.json never says "running" for a stage nobody runs."""
    begin_stage(directory, fingerprint, name)
    try:
        yield
    except KeyboardInterrupt:
        _mark_stopped(directory, fingerprint, name, "interrupted")
        raise StageInterrupted(name, directory) from None
    except BaseException as error:
        _mark_stopped(directory, fingerprint, name, "failed", f"{type(error).__name__}: {error}")
        raise


def begin_stage(directory: Path, fingerprint: str, name: str) -> None:
    """Mark a stage running; a folder left by other inputs is moved aside, never deleted (one
    holding nothing but its stage.json, left by a stage that stopped early, is replaced)."""

    def begin() -> None:
        marker = directory / MARKER
        if marker.exists() and json.loads(marker.read_text()).get("fingerprint") != fingerprint:
            if [path for path in directory.rglob("*") if path.is_file()] == [marker]:
                shutil.rmtree(directory)  # nothing to keep: the marker and empty folders
            else:
                _move_aside(directory, name)
        directory.mkdir(parents=True, exist_ok=True)
        write_json(marker, {"stage": name, "fingerprint": fingerprint, "status": "running"})

    on_main_process(begin)


def _move_aside(directory: Path, name: str) -> None:
    stale = directory.with_name(f"{directory.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
    logger.warning("%s: inputs changed; moving the previous %s to %s", name, directory, stale)
    shutil.move(directory, stale)


def finish_stage(directory: Path, fingerprint: str, name: str, **summary: Any) -> None:
    on_main_process(
        lambda: write_json(
            directory / MARKER,
            {"stage": name, "fingerprint": fingerprint, "status": "done", **summary},
        )
    )


def _mark_stopped(
    directory: Path, fingerprint: str, name: str, status: str, error: str | None = None
) -> None:
    """Without waiting for the other processes, which may not have stopped."""
    if is_main_process() and directory.is_dir():
        state = {"stage": name, "fingerprint": fingerprint, "status": status}
        write_json(directory / MARKER, state if error is None else {**state, "error": error})
