"""The A-LoL pipeline as explicit stages: sft → value → advantage → train → eval.

Each stage is a function of one `PipelineConfig` that reads its inputs from the run directory
(or the config), writes its artifacts into its own folder and records a fingerprint of its
inputs in `stage.json`. A stage whose folder holds a finished run with the same fingerprint
is skipped, so `alol run` can be rerun after a crash or a change and redoes only what the
change invalidated. Stages talk only through those artifacts: no stage module imports another.

Run directory layout::

    run_dir/reward_model/model/        the reward model, when alol fits one (a classifier folder)
    run_dir/sft/model/                 the reference policy π_ref (when alol trains it)
    run_dir/value/                     value head (safetensors), fit metrics, decoded samples, plot;
                                       or prompt_values.json (value_estimate: per_prompt)
    run_dir/advantage/                 cached table, advantage_stats.json, advantage_hist.png,
                                       top_advantages.md
    run_dir/pairs/                     π_ref's log-probs of preference pairs (DPO), reference_logps-*
    run_dir/kto/                       π_ref's log-probs of KTO's completions, reference_logps-*
    run_dir/train/<objective>/         checkpoints, final/ model, metrics.jsonl, train_curves.png
    run_dir/train/start_validation/    π_ref's validation before the first step, one pass for
                                       every objective trained from it
    run_dir/eval/<name>/               answers.jsonl, scores/, eval.json, report.md, samples.jsonl
    run_dir/eval/                      comparison.md, samples.md, audit.md, audit.json, constants/,
                                       reward_vs_judges.png (with judges)

Every stage runs unchanged under `accelerate launch` (or `torchrun`): decoding, scoring and the
advantage precompute give each process every world_size-th example and gather the results
(`alol.distributed.gather_in_order`); training is Trainer's DDP/FSDP/DeepSpeed; only the main
process writes artifacts, and the others wait for it (`alol.distributed.on_main_process`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from alol.choices import ONLINE_METHODS
from alol.config import PipelineConfig
from alol.models.memory import release_memory
from alol.pipeline.advantage_stage import run_advantage
from alol.pipeline.eval_stage import Evaluation, run_eval
from alol.pipeline.online_stage import run_online
from alol.pipeline.reward_model_stage import run_reward_model
from alol.pipeline.sft_stage import run_sft
from alol.pipeline.train_stage import run_train
from alol.pipeline.value_stage import run_value

logger = logging.getLogger(__name__)

__all__ = [
    "Evaluation",
    "PipelineConfig",
    "Stage",
    "run_advantage",
    "run_all",
    "run_eval",
    "run_online",
    "run_reward_model",
    "run_sft",
    "run_train",
    "run_value",
    "stage_plan",
]


@dataclass(frozen=True)
class Stage:
    name: str
    """What its timing is filed under: `reward_model`, `sft`, `value`, `advantage`, an
    objective's or online method's name, `eval`."""
    title: str
    """One line saying what the stage does, as `alol demo` announces it."""
    work: Callable[[], object]

    def run(self) -> object:
        """The stage's work; what it freed is handed back to the system before the next stage
        (`release_memory`), so one process running many stages is bounded by the largest."""
        result = self.work()
        release_memory()
        return result


def stage_plan(cfg: PipelineConfig) -> list[Stage]:
    """The stages `alol run` chains, in order: the reward model (when one is asked for and no
    reward is named), sft (unless a reference is given), value, advantage, each objective, and
    eval (when there are test prompts)."""
    stages = []
    if cfg.reward_model is not None and cfg.reward is None:
        stages.append(
            Stage(
                "reward_model",
                "reward model R: fit on the training data's scores or preferences",
                lambda: run_reward_model(cfg),
            )
        )
    if cfg.reference is None:
        stages.append(
            Stage("sft", "reference π_ref: NLL on the training data (sft)", lambda: run_sft(cfg))
        )
    stages += [
        Stage(
            "value",
            "value V(x): decode π_ref on every training prompt, score"
            if cfg.value_estimate == "per_prompt"
            else "value V(x): decode π_ref on validation prompts, score, fit",
            lambda: run_value(cfg),
        ),
        Stage(
            "advantage",
            "advantage A = R − V(x) for every training answer (audit)",
            lambda: run_advantage(cfg),
        ),
    ]
    stages += [
        Stage(name, f"online {name} from π_ref (TRL)", lambda name=name: run_online(cfg, name))
        if name in ONLINE_METHODS
        else Stage(name, f"train {name} from π_ref", lambda name=name: run_train(cfg, name))
        for name in cfg.objectives
    ]
    if cfg.test_data:
        stages.append(
            Stage("eval", "eval: decode the test prompts with every model", lambda: run_eval(cfg))
        )
    return stages


def run_all(cfg: PipelineConfig) -> Evaluation | None:
    """Every stage of `stage_plan`; the evaluation, or None without test prompts."""
    result: object = None
    stages = stage_plan(cfg)
    for number, stage in enumerate(stages, start=1):
        logger.info("[%d/%d] %s", number, len(stages), stage.title)
        result = stage.run()
    return result if cfg.test_data else None
