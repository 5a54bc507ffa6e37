"""Checkpoints that appear atomically and are checked before a run resumes from them.

transformers' Trainer writes `checkpoint-N/` file by file; a kill mid-save leaves a torn
folder that `resume_from_checkpoint=True` would pick. `AtomicCheckpoints` (mixed into every
alol trainer) writes each checkpoint under `.partial/` and renames it into place once every
process has finished writing, and checks a checkpoint's files before resuming from it.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import shutil
import zipfile
from pathlib import Path

from safetensors import safe_open
from transformers.trainer_callback import TrainerState
from transformers.trainer_utils import (
    PREFIX_CHECKPOINT_DIR,
    get_last_checkpoint,
    rotate_checkpoints,
)

from alol.atomic import replace_directory
from alol.errors import AlolError

logger = logging.getLogger(__name__)

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


class AtomicCheckpoints:
    """Mixed in before `transformers.Trainer`: its checkpoints appear whole or not at all."""

    _partial_dir: Path | None = None
    """Set while a checkpoint is being written."""

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        """Trainer.train, refusing an unreadable checkpoint with a message that says what to do.

        `resume_from_checkpoint=True` resumes from the newest complete checkpoint; folders left
        by a save that a crash interrupted are never candidates, and are deleted here.
        """
        self._discard_partial_checkpoints()
        if resume_from_checkpoint is True:
            resume_from_checkpoint = newest_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise CheckpointError(
                    f"no checkpoint to resume from in {self.args.output_dir}; "
                    "start without resuming"
                )
        if not resume_from_checkpoint:
            return super().train(**kwargs)
        check_checkpoint(Path(resume_from_checkpoint))
        try:
            return super().train(resume_from_checkpoint=str(resume_from_checkpoint), **kwargs)
        except pickle.UnpicklingError as error:  # torch.load(weights_only=True) refused a file
            refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
            _refuse_checkpoint(
                Path(resume_from_checkpoint),
                "a file holds objects that torch.load does not load safely"
                + (f" (a {refused[1]})" if refused else "")
                + "; it was not written by this alol's trainer",
            )

    def _save_checkpoint(self, model, trial) -> None:
        """Let Trainer write `checkpoint-N` under `.partial/`, then rename it into place."""
        run_dir = Path(super()._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        self._discard_partial_checkpoints()
        self._partial_dir = run_dir / PARTIAL_CHECKPOINTS
        try:
            super()._save_checkpoint(model, trial)
            if self.args.should_save:
                self._add_to_checkpoint(run_dir / PARTIAL_CHECKPOINTS / name)
        finally:
            self._partial_dir = None
        self._publish_checkpoint(run_dir / PARTIAL_CHECKPOINTS / name, run_dir / name)

    def _add_to_checkpoint(self, folder: Path) -> None:
        """Files of a subclass's own to keep in each checkpoint, written before it appears."""

    def _get_output_dir(self, trial) -> str:
        """While a checkpoint is being written: the `.partial/` folder it is written into."""
        if self._partial_dir is not None:
            return str(self._partial_dir)
        return super()._get_output_dir(trial)

    def _publish_checkpoint(self, written: Path, final: Path) -> None:
        # Every process has written its part (model shards, its RNG state) before the rename.
        self.accelerator.wait_for_everyone()
        if self.state.best_model_checkpoint == str(written):
            self.state.best_model_checkpoint = str(final)
            if self.args.should_save:  # the saved state must name the final folder too
                self.state.save_to_json(str(written / TRAINER_STATE_FILE))
        if self.args.should_save:
            replace_directory(written, final)
            written.parent.rmdir()  # the empty .partial/
            rotate_checkpoints(
                str(final.parent),
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )
        self.accelerator.wait_for_everyone()

    def _discard_partial_checkpoints(self) -> None:
        partial = Path(self.args.output_dir) / PARTIAL_CHECKPOINTS
        if self.args.should_save and partial.exists():
            logger.info("removing %s, left by a checkpoint save that did not finish", partial)
            shutil.rmtree(partial)
        self.accelerator.wait_for_everyone()
