"""Stage 0, the reward model: reads the training records (their stored scores or preferences)
and the policy's tokenizer (to render prompts as the policy sees them), fits a sequence
classifier on `cfg.reward_model`'s backbone, and writes `run_dir/reward_model/`: the model in
`model/` (a folder the classifier reward spec loads), metrics.json, fit.png, stage.json.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from alol.atomic import write_json
from alol.config import PipelineConfig
from alol.data.conversions import to_reward_records
from alol.data.records import PromptRecord
from alol.distributed import on_main_process
from alol.errors import AlolError
from alol.fingerprint import (
    fingerprint_model,
    fingerprint_of,
    fingerprint_records,
    fingerprint_rendering,
)
from alol.models.model_checks import check_model
from alol.pipeline.inputs import (
    PLAIN_TEMPLATE,
    REWARD_MODEL_DIR,
    load_splits,
    policy_tokenizer,
    render,
)
from alol.pipeline.settings import reward_model_config, tokenization
from alol.pipeline.stage import finish_stage, running_stage, stage_done
from alol.pipeline.trainer_setup import CheckpointEvery, MetricsFileCallback, train_or_resume
from alol.provenance import model_record
from alol.reports.metrics import agreement_of, formatted
from alol.reports.plots import plot_reward_model_fit
from alol.rewards.classifier import resolve_inputs
from alol.rewards.reward_model import (
    RewardModelConfig,
    RewardModelTrainer,
    backbone_path,
    classifier_settings,
    load_backbone,
    reward_model_data,
    save_reward_model,
    training_arguments,
)
from alol.rewards.reward_model_metrics import heldout_metrics

logger = logging.getLogger(__name__)

FITS = {"preferences": "Bradley–Terry", "scores": "regression", "labels": "classification"}


def fingerprinted_settings(config: RewardModelConfig) -> dict:
    """The settings a fitted reward model is keyed on, and that its backbone fitted without
    dropout: a model fitted with the backbone's dropout, before alol switched it off, is
    fitted again."""
    return {**asdict(config), "backbone_dropout": False}


def check_answers(records: list) -> None:
    """A reward model learns from answers; a record with a prompt alone (a file without a
    `response` field) gives it nothing, whatever else the record holds."""
    prompt_only = next((r for r in records if isinstance(r, PromptRecord)), None)
    if prompt_only is not None:
        raise AlolError(
            f"{prompt_only.source or 'a training record'}: the reward model learns from answers "
            "with a stored reward, or from pairs, and this record holds a prompt alone; a "
            "classifier of the prompt (--reward-model-inputs prompt) still needs a 'response' "
            "field in each record (any text: it is not read)"
        )


def run_reward_model(cfg: PipelineConfig) -> Path:
    """Fit the reward model on the training records; returns the folder of the classifier."""
    if cfg.reward_model is None:
        raise AlolError(
            "`alol reward-model` needs --reward-model BACKBONE: a model folder for "
            "AutoModelForSequenceClassification, or 'minilm' (the offline all-MiniLM-L6-v2)"
        )
    out = cfg.root / REWARD_MODEL_DIR[0]
    config = reward_model_config(cfg)
    splits = load_splits(cfg)
    check_answers(splits.train)
    backbone = backbone_path(config.backbone)
    check_model(backbone, causal=False)
    policy, tokenizer = policy_tokenizer(cfg)
    fingerprint = fingerprint_of(
        "reward-model",
        fingerprint_model(backbone),
        fingerprint_records(to_reward_records(splits.train)),
        fingerprinted_settings(config),
        tokenization(cfg),
        None if tokenizer is None else tokenizer.chat_template,
    )
    if stage_done(out, fingerprint):
        logger.info("reward model: up to date (%s)", out)
        return out / REWARD_MODEL_DIR[1]
    with running_stage(out, fingerprint, "reward-model"):
        data = reward_model_data(
            splits.train, lambda prompt: render(cfg, prompt, tokenizer), config
        )
        model, classifier_tokenizer = load_backbone(config)
        inputs = resolve_inputs(classifier_tokenizer, config.inputs)
        trainer = RewardModelTrainer(
            model=model,
            args=training_arguments(
                config, out / "checkpoints", bool(data.heldout), cfg.logging_steps, cfg.report_to
            ),
            train_dataset=data.train,
            eval_dataset=data.heldout or None,
            processing_class=classifier_tokenizer,
            callbacks=[
                MetricsFileCallback(out / "metrics.jsonl"),
                CheckpointEvery(cfg.save_steps),
            ],
            targets=data.targets,
            inputs=inputs,
            max_length=config.max_length,
            off_prompt_weight=config.off_prompt_weight,
        )
        logger.info(
            "reward model: %s on %d %s (%d held out) from %s",
            FITS[data.targets],
            len(data.train),
            "pairs" if data.targets == "preferences" else "scored responses",
            len(data.heldout),
            cfg.train_data,
        )
        train_or_resume(trainer, out, cfg.resume)
        report = heldout_metrics(
            trainer.model, classifier_tokenizer, data, inputs, config.max_length
        )
        agreement = agreement_of(report)
        settings = {
            **classifier_settings(classifier_tokenizer, data, config),
            "policy": model_record(
                policy or PLAIN_TEMPLATE, fingerprint_rendering(tokenizer, cfg.string_prompts)
            ),
            # a judge's reports say how far to trust it (alol.pipeline.judges)
            **({"heldout": asdict(agreement)} if agreement is not None else {}),
        }

        def write() -> None:
            save_reward_model(
                trainer.model, classifier_tokenizer, out / REWARD_MODEL_DIR[1], settings
            )
            write_json(out / "metrics.json", {**report, "settings": settings})
            plot_reward_model_fit(report, out / "fit.png")

        on_main_process(write)
        summary = {k: v for k, v in report.items() if not isinstance(v, list)}
        finish_stage(out, fingerprint, "reward-model", **summary)
    logger.info(
        "reward model: %s; saved to %s (metrics in metrics.json, plot in fit.png)",
        fit_summary(report),
        out / REWARD_MODEL_DIR[1],
    )
    return out / REWARD_MODEL_DIR[1]


def fit_summary(report: dict) -> str:
    """The held-out figures that say how good the fit is, for its kind of targets."""
    if "balanced_accuracy" in report:
        return (
            f"held-out accuracy {formatted(report['accuracy'], '.3f')} "
            f"({formatted(report['positive_share'], '.0%')} positives), balanced accuracy "
            f"{formatted(report['balanced_accuracy'], '.3f')}"
        )
    summary = (
        f"held-out pairwise accuracy {formatted(report.get('pairwise_accuracy'), '.3f')}, "
        f"Pearson {formatted(report.get('pearson'), '.3f')}, Spearman "
        f"{formatted(report.get('spearman'), '.3f')} with the stored scores"
    )
    if "off_prompt_accuracy" in report:
        summary += (
            "; prefers an answer to another prompt's given to its prompt "
            f"{formatted(report['off_prompt_accuracy'], '.0%')} of the time"
        )
    return summary
