"""Stage bookkeeping: `<stage dir>/stage.json` records a fingerprint of the stage's inputs and
whether the stage finished, so a rerun skips a stage whose inputs are unchanged and moves a
folder left by other inputs aside (never deleting it). It reads and writes only that marker,
and only on the main process.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from alol.atomic import write_json
from alol.distributed import on_main_process

logger = logging.getLogger(__name__)


def stage_done(directory: Path, fingerprint: str) -> bool:
    marker = directory / "stage.json"
    if not marker.exists():
        return False
    state = json.loads(marker.read_text())
    return state.get("fingerprint") == fingerprint and state.get("status") == "done"


def begin_stage(directory: Path, fingerprint: str, name: str) -> None:
    """Mark a stage running; a folder left by other inputs is moved aside, never deleted."""

    def begin() -> None:
        marker = directory / "stage.json"
        if marker.exists() and json.loads(marker.read_text()).get("fingerprint") != fingerprint:
            stale = directory.with_name(f"{directory.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
            logger.warning(
                "%s: inputs changed; moving the previous %s to %s", name, directory, stale
            )
            shutil.move(directory, stale)
        directory.mkdir(parents=True, exist_ok=True)
        write_json(marker, {"stage": name, "fingerprint": fingerprint, "status": "running"})

    on_main_process(begin)


def finish_stage(directory: Path, fingerprint: str, name: str, **summary: Any) -> None:
    on_main_process(
        lambda: write_json(
            directory / "stage.json",
            {"stage": name, "fingerprint": fingerprint, "status": "done", **summary},
        )
    )
