"""Judges: rewards a run is evaluated by and never trained on, read from `cfg.judges`. Each is
refused when it is the training reward itself, marked when it is one of its components, and
loaded only when a stage scores with it (its held-out agreement, when `alol reward-model`
fitted it, only when an evaluation reports it)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from alol.errors import AlolError
from alol.fingerprint import spec_fingerprint
from alol.pipeline.inputs import StageInputs, check_reward_model_prompts
from alol.reports.metrics import HeldOutAgreement
from alol.rewards import Reward, load_reward
from alol.rewards.classifier import fitted_agreement
from alol.rewards.specs import RewardSpec, nested_specs, normalize_spec, reward_name

logger = logging.getLogger(__name__)


@dataclass
class Judge:
    """A reward that only evaluates: it never trains, fits V or (unless `select_by` names it)
    selects a checkpoint."""

    name: str
    spec: RewardSpec
    fingerprint: str
    independent: bool
    """False when it is a component of the training reward, so it cannot tell on it."""

    @cached_property
    def agreement(self) -> HeldOutAgreement | None:
        """How often it orders its held-out pairs as its labels do, when `alol reward-model`
        fitted it; read when an evaluation reports it, never by training."""
        normalized = normalize_spec(self.spec)
        if normalized["type"] != "classifier":
            return None
        return fitted_agreement(Path(normalized["path"]))

    @cached_property
    def reward(self) -> Reward:
        """Loaded on first use, so a stage found up to date never loads a judge's weights."""
        return load_reward(self.spec)

    def load(self) -> Reward:
        """Load it now: a stage that will score with it fails before its long work if the
        judge cannot load, not after."""
        return self.reward


def configured_judges(inputs: StageInputs) -> list[Judge]:
    """`cfg.judges`, each refused when it is the training reward itself; none is loaded yet."""
    component_fps = _component_fingerprints(inputs.reward_spec)
    judges = []
    for spec in inputs.cfg.judges or []:
        fingerprint = spec_fingerprint(spec)
        check_reward_model_prompts(inputs.cfg, spec)
        name = reward_name(spec)
        if fingerprint == inputs.reward_fingerprint:
            raise AlolError(
                f"judge {name!r} ({spec!r}) is the training reward itself, so it cannot "
                "tell whether a reward gain is real; give a judge the models were not trained "
                "on (another scorer, reward model or function)"
            )
        if any(judge.name == name for judge in judges):
            raise AlolError(
                f"two judges are named {name!r}; give each a distinct 'name' in its spec"
            )
        independent = fingerprint not in component_fps
        if not independent:
            logger.warning(
                "judge %r is a component of the training reward, so it is not independent of "
                "it; the audit says so beside its figures",
                name,
            )
        judges.append(Judge(name, spec, fingerprint, independent))
    return judges


def _component_fingerprints(spec: Any) -> set[str]:
    """The fingerprints of the rewards a composite reward is made of (a sum's terms, a gated
    reward's term and gate), nested ones included."""
    if spec is None:
        return set()
    fingerprints = set()
    for part in nested_specs(normalize_spec(spec)):
        fingerprints.add(spec_fingerprint(part))
        fingerprints |= _component_fingerprints(part)
    return fingerprints
