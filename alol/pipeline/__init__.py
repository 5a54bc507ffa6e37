"""The A-LoL pipeline as explicit stages: sft → value → advantage → train → eval.

Each stage is a function of one `PipelineConfig` that reads its inputs from the run directory
(or the config), writes its artifacts into its own folder and records a fingerprint of its
inputs in `stage.json`. A stage whose folder holds a finished run with the same fingerprint
is skipped, so `alol run` can be rerun after a crash or a change and redoes only what the
change invalidated.

Run directory layout::

    run_dir/sft/model/                 the reference policy π_ref (when alol trains it)
    run_dir/value/                     value head (safetensors), fit metrics, decoded samples, plot
    run_dir/advantage/                 cached table, advantage_stats.json, advantage_hist.png
    run_dir/train/<objective>/         checkpoints, final/ model, metrics.jsonl, train_curves.png
    run_dir/eval/<name>/               eval.json, report.md, samples.jsonl

Every stage runs unchanged under `accelerate launch` (or `torchrun`): decoding, scoring and the
advantage precompute give each process every world_size-th example and gather the results
(`alol.io.gather_in_order`); training is Trainer's DDP/FSDP/DeepSpeed; only the main process
writes artifacts, and the others wait for it (`alol.io.on_main_process`).
"""

from __future__ import annotations

from alol.config import PipelineConfig
from alol.eval_report import EvalReport
from alol.pipeline.advantage import run_advantage
from alol.pipeline.evaluate import load_policy_for_eval, run_eval
from alol.pipeline.inputs import (
    Splits,
    hold_out_prompts,
    load_model,
    load_model_for_inference,
    load_splits,
    reference_dtype,
    reference_path,
    unique_prompts,
)
from alol.pipeline.sft import run_sft
from alol.pipeline.train import MetricsFileCallback, run_train
from alol.pipeline.value import run_value

__all__ = [
    "MetricsFileCallback",
    "PipelineConfig",
    "Splits",
    "hold_out_prompts",
    "load_model",
    "load_model_for_inference",
    "load_policy_for_eval",
    "load_splits",
    "reference_dtype",
    "reference_path",
    "run_advantage",
    "run_all",
    "run_eval",
    "run_sft",
    "run_train",
    "run_value",
    "unique_prompts",
]


def run_all(cfg: PipelineConfig) -> dict[str, EvalReport]:
    """sft (unless a reference is given) → value → advantage → train each objective → eval."""
    if cfg.reference is None:
        run_sft(cfg)
    run_value(cfg)
    run_advantage(cfg)
    for name in cfg.objectives:
        run_train(cfg, name)
    return run_eval(cfg) if cfg.test_data else {}
