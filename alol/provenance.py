"""Which model an artifact was made for, and the check that it is used with that model.

A value head fitted on one model's hidden states, or a reward model fitted on prompts that one
policy's chat template rendered, gives numbers that mean nothing for another model, usually
without any error. Each records the fingerprint of the model it was made for; each stage that
reads it compares that with the model it is about to use and refuses a mismatch in one line
that names both models and the command that makes the artifact again. (The precompute's tables
need no record: the reference's fingerprint is part of their cache key, so another reference
computes its own table.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alol.errors import AlolError


class ArtifactMismatch(AlolError):
    """An artifact made for one model is about to be used with another."""


def model_record(path: str | Path, fingerprint: str) -> dict[str, str]:
    """What an artifact stores about the model it was made for."""
    return {"path": str(path), "fingerprint": fingerprint}


def check_made_for(
    artifact: str, recorded: dict[str, Any] | None, path: str | Path, fingerprint: str, remake: str
) -> None:
    """Refuse to use `artifact` with the model at `path` unless it was made for that model.

    `remake` says how to make the artifact again for this model (a command the CLI accepts).
    """
    if recorded is None:
        raise ArtifactMismatch(
            f"{artifact} does not record which model it was made for (an older alol wrote it), "
            f"so it may not fit {path}; {remake}"
        )
    if recorded.get("fingerprint") != fingerprint:
        raise ArtifactMismatch(
            f"{artifact} was made for {recorded.get('path')} (fingerprint "
            f"{str(recorded.get('fingerprint'))[:12]}), not for {path} (fingerprint "
            f"{fingerprint[:12]}), which this run uses; {remake}"
        )
