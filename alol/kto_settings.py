"""KTO's settings: which examples are desirable (the two classes' weights are objective
hyperparameters, `alol.method.config`). Each is a
setting of `PipelineConfig` (a YAML key and an `alol train` flag); they are declared apart from
the loss (`alol.method.kto`), which needs torch, so the command line checks them without it."""

from __future__ import annotations

from dataclasses import dataclass

from alol.setting_checks import one_of, option

LABEL_RULES = ("auto", "reward_above", "advantage_positive")


@dataclass
class KTOSettings:
    """KTO's settings; each a setting of `PipelineConfig` (a YAML key and an `alol train` flag)."""

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
