"""The objectives' hyperparameters, declared once: each a setting of `PipelineConfig` (a YAML
key and an `alol train` flag) and of `AlolConfig`, and what every loss reads. Kept apart from
the losses (`alol.method.objectives`), which need torch, so settings are checked without it."""

from __future__ import annotations

from dataclasses import dataclass, fields

from alol.setting_checks import above, at_least, between_open, check_settings, fraction, option

_TRAIN = ("train",)


@dataclass
class ObjectiveConfig:
    """Hyperparameters shared by the objectives; each objective reads only the ones it names
    (`Objective.hyperparameters`), so changing another never retrains it."""

    clip: float | None = option(
        0.9,
        "ε of the importance-weight clamp [1−ε, 1+ε] (the A-LoL paper's 0.9 gives [0.1, 1.9]); "
        "'none' (None in Python) turns clipping off, which 0 never does.",
        _TRAIN,
        check=between_open(0, 1),
    )
    beta: float = option(
        0.1, "DPO's and KTO's β, and a_lol_kl's KL coefficient.", _TRAIN, check=at_least(0)
    )
    gold_floor: float = option(
        0.1,
        "r_gold: lower bound on the detached token probability that weights each token.",
        _TRAIN,
        check=fraction(),
    )
    pro_sft_weight: float = option(
        0.05,
        "PRO: weight of the SFT term on the best candidate (× (n−1)², as PRO's code).",
        _TRAIN,
        check=at_least(0),
    )
    desirable_weight: float = option(
        1.0,
        "KTO: weight of the desirable examples' losses (TRL's desirable_weight).",
        _TRAIN,
        check=above(0),
    )
    undesirable_weight: float = option(
        1.0,
        "KTO: weight of the undesirable examples' losses (TRL's undesirable_weight).",
        _TRAIN,
        check=above(0),
    )

    def __post_init__(self) -> None:
        check_settings(self, ObjectiveConfig)

    @classmethod
    def of(cls, settings: ObjectiveConfig) -> ObjectiveConfig:
        """The hyperparameters alone, out of a config that carries them."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})
