"""Checkpoints that appear atomically and are checked before a run resumes from them.

transformers' Trainer writes `checkpoint-N/` file by file; a kill mid-save leaves a torn
folder that `resume_from_checkpoint=True` would pick. AlolTrainer writes each checkpoint under
`.partial/` and renames it into place (`AlolTrainer._save_checkpoint`); here are the names and
the checks.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from safetensors import safe_open
from transformers.trainer_callback import TrainerState
from transformers.trainer_utils import get_last_checkpoint

from alol.errors import AlolError

PARTIAL_CHECKPOINTS = ".partial"
"""Folder (inside the output folder) where a checkpoint is written before it is renamed into place."""


TRAINER_STATE_FILE = "trainer_state.json"


class CheckpointError(AlolError):
    """A checkpoint to resume from cannot be read."""


def newest_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step in `output_dir`, if there is one."""
    if not Path(output_dir).is_dir():
        return None
    newest = get_last_checkpoint(str(output_dir))
    return None if newest is None else Path(newest)


def check_checkpoint(checkpoint: Path) -> None:
    """Raise `CheckpointError` naming the first unreadable file of a checkpoint folder.

    Cheap checks that catch a truncated or damaged file before anything is loaded: JSON files
    parse, safetensors headers cover their files, and `torch.save` archives (zip) end with
    their directory.
    """
    if not checkpoint.is_dir():
        raise CheckpointError(f"checkpoint {checkpoint} does not exist")
    if not (checkpoint / TRAINER_STATE_FILE).is_file():
        _refuse_checkpoint(checkpoint, f"{TRAINER_STATE_FILE} is missing")
    for path in sorted(p for p in checkpoint.rglob("*") if p.is_file()):
        try:
            if path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt"):
                    pass
            elif path.suffix in (".pt", ".pth", ".bin"):
                zipfile.ZipFile(path).close()
        except Exception as error:  # each reader raises its own type for a damaged file
            _refuse_checkpoint(
                checkpoint, f"{path.relative_to(checkpoint)} is unreadable ({error})"
            )
    try:
        TrainerState.load_from_json(str(checkpoint / TRAINER_STATE_FILE))
    except (TypeError, ValueError) as error:  # readable JSON, but not a state Trainer wrote
        _refuse_checkpoint(checkpoint, f"{TRAINER_STATE_FILE} is not a Trainer state ({error})")


def _refuse_checkpoint(checkpoint: Path, problem: str) -> None:
    raise CheckpointError(
        f"cannot resume from checkpoint {checkpoint}: {problem}. Delete that folder to resume "
        "from the checkpoint before it, or rerun with --no-resume to start this stage over."
    )
