"""KTO's settings: how its two classes weigh and which examples are desirable. Each is a
setting of `PipelineConfig` (a YAML key and an `alol train` flag); they are declared apart from
the loss (`alol.method.kto`), which needs torch, so the command line checks them without it."""

from __future__ import annotations

from dataclasses import dataclass

from alol.setting_checks import above, one_of, option

LABEL_RULES = ("auto", "reward_above", "advantage_positive")


@dataclass
class KTOSettings:
    """KTO's settings; each a setting of `PipelineConfig` (a YAML key and an `alol train` flag)."""

    desirable_weight: float = option(
        1.0,
        "KTO: weight of the desirable examples' losses (TRL's desirable_weight).",
        ("train",),
        check=above(0),
    )
    undesirable_weight: float = option(
        1.0,
        "KTO: weight of the undesirable examples' losses (TRL's undesirable_weight).",
        ("train",),
        check=above(0),
    )
    kto_label: str = option(
        "auto",
        "KTO: which examples are desirable. 'auto': TRL's unpaired `label` as given, preference "
        "pairs and ranked records (HH) split into their chosen (desirable) and rejected answers, "
        "scalar rewards by 'reward_above'; 'reward_above': reward above kto_threshold; "
        "'advantage_positive': A = R − V(x) > 0, by alol's value estimate of π_ref.",
        ("train",),
        check=one_of(*LABEL_RULES),
    )
    kto_threshold: float | None = option(
        None,
        "KTO with 'reward_above': the reward a desirable answer exceeds (default: the median).",
        ("train",),
    )
