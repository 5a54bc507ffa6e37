"""Stage 1, the reference policy π_ref: reads `cfg.model` and the training records, fine-tunes
with NLL (full or LoRA, merged into the weights) and writes `run_dir/sft/`: checkpoints,
metrics.jsonl, train_curves.png, stage.json and the model in `run_dir/sft/model/`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alol.config import PipelineConfig
from alol.data.objective_data import nll_dataset
from alol.distributed import on_main_process
from alol.errors import AlolError
from alol.fingerprint import fingerprint_model, fingerprint_of, fingerprint_records
from alol.models.model_checks import check_model
from alol.pipeline.inputs import (
    check_context_length,
    load_splits,
    load_tokenizer,
    load_weights_to_train,
    log_data,
    pointwise_records,
    tokenize_with,
    without_cut_responses,
)
from alol.pipeline.stage import finish_stage, running_stage, stage_done
from alol.pipeline.trainer_setup import (
    build_trainer,
    save_policy,
    train_or_resume,
    training_fingerprint_parts,
)
from alol.reports.plots import plot_training_curves

logger = logging.getLogger(__name__)


def run_sft(cfg: PipelineConfig) -> Path:
    """Fine-tune `cfg.model` with NLL on the training responses; the result is π_ref."""
    if cfg.model is None:
        raise AlolError("`alol sft` needs --model (the base model to fine-tune).")
    check_model(cfg.model)
    check_context_length(cfg, cfg.model)
    out = cfg.root / "sft"
    splits = without_cut_responses(cfg, load_splits(cfg), cfg.model)
    records = pointwise_records(cfg, splits.train)
    max_steps = cfg.sft_max_steps or cfg.max_steps
    fingerprint = fingerprint_of(
        "sft",
        fingerprint_model(cfg.model),
        fingerprint_records(records),
        training_fingerprint_parts(cfg, "nll", out, max_steps, with_eval=False),
    )
    if stage_done(out, fingerprint):
        logger.info("sft: up to date (%s)", out)
        return out / "model"
    with running_stage(out, fingerprint, "sft"):
        tokenizer = load_tokenizer(cfg.model)
        dataset = nll_dataset(records, tokenize_with(cfg, tokenizer))
        cuts = dataset.cut_counts()
        log_data(logger, "sft", splits, cuts, cfg.max_response_length)
        model = load_weights_to_train(cfg, cfg.model)
        trainer = build_trainer(cfg, "nll", model, tokenizer, dataset, out, max_steps)
        train_or_resume(trainer, out, cfg.resume)
        save_policy(trainer, out / "model", merge=True)
        on_main_process(
            lambda: plot_training_curves(out / "metrics.jsonl", out / "train_curves.png")
        )
        finish_stage(out, fingerprint, "sft", examples=len(records), data=splits.counts(), **cuts)
    logger.info("sft: π_ref saved to %s (metrics in %s)", out / "model", out / "metrics.jsonl")
    return out / "model"
