"""Rewards: turn a reward *spec* into a callable that scores (prompt, response) pairs.

A spec is one of:
- `"package.module:function"` or `"path/to/file.py:function"`: a Python function taking
  `(prompts, responses)` and returning, per record, a float or a dict of named components;
  `{"type": "callable", "path": ..., "name": ..., "kwargs": {...}}` passes extra keyword
  arguments to it;
- a built-in scorer's name (`alol.rewards.scorers.SCORERS`), or `{"type": NAME, "name": ..., **options}`;
- `{"type": "classifier", "path": DIR, ...}`: a local Hugging Face sequence classifier
  (see `ClassifierReward`);
- `{"type": "sum", "components": [{"spec": ..., "weight": w, "name": n}, ...]}`, or a plain
  list of specs (weights 1): a weighted sum whose components stay visible;
- `{"type": "gated", "term": SPEC, "gate": SPEC, "name": ...}`: the term's components times the
  gate's value, a probability in [0, 1] (e.g. a classifier of the prompt), so that a term
  counts only where it applies (see `GatedReward`).

Every reward returns one dict of components per record. `score` runs it batch by batch,
adds the weighted `"total"`, and turns any failure into a `RewardError` that names the
batch, the record and the component.
"""

from alol.rewards.base import CallableReward, Reward, RewardError
from alol.rewards.classifier import ClassifierReward
from alol.rewards.gated import GatedReward
from alol.rewards.scoring import MISSING_EOS, score, with_missing_eos_penalty
from alol.rewards.specs import BuiltReward, RewardSpec, load_callable, load_reward
from alol.rewards.weighted import WeightedSum

__all__ = [
    "BuiltReward",
    "MISSING_EOS",
    "CallableReward",
    "ClassifierReward",
    "GatedReward",
    "Reward",
    "RewardError",
    "RewardSpec",
    "WeightedSum",
    "load_callable",
    "load_reward",
    "score",
    "with_missing_eos_penalty",
]
