"""Stage 2, the value estimate V(x): reads π_ref, the validation records and the reward, decodes
and scores π_ref's samples (or takes the data's stored rewards with `value_from_data`), fits
the value head on their prompt states and writes the head, its fit metrics and plot, and the
scored samples to `run_dir/value/`. With `value_estimate: per_prompt` it decodes and scores
π_ref on the training prompts instead and writes each prompt's mean reward
(`alol.models.prompt_values`). Either way it then checks, before any training, that the reward
does not pay a stock answer more than π_ref's scored answers (`alol.pipeline.reward_probes`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from alol.atomic import write_json, write_text
from alol.config import PipelineConfig
from alol.data.conversions import split_source, to_reward_records
from alol.data.records import PromptRecord, RewardRecord
from alol.distributed import gather_in_order, on_main_process
from alol.errors import AlolError, DataError
from alol.fingerprint import fingerprint_of, fingerprint_records, json_sha256
from alol.models.prompt_values import (
    VALUES_FILE,
    mean_per_prompt,
    per_prompt_report,
    prompt_values_model,
    save_prompt_values,
)
from alol.models.value_fit import fit_value_head
from alol.models.value_io import METRICS_FILE, save_value_head, value_head_model
from alol.pipeline.decoding import decode_and_score
from alol.pipeline.inputs import (
    StageInputs,
    load_model_for_inference,
    load_tokenizer,
    render,
    stage_inputs,
    unique_prompts,
)
from alol.pipeline.reward_probes import check_reward_probes
from alol.pipeline.settings import (
    configured_reference_dtype,
    tokenization,
    value_config,
    value_generation_config,
)
from alol.pipeline.stage import finish_stage, running_stage, stage_done
from alol.provenance import model_record
from alol.reports.metrics import counted, formatted
from alol.reports.plots import plot_value_fit

logger = logging.getLogger(__name__)


def run_value(cfg: PipelineConfig) -> Path:
    """Decode π_ref on validation prompts, score, and fit the value head on its prompt states;
    with `value_estimate: per_prompt`, decode and score it on every training prompt instead."""
    if cfg.value_estimate == "per_prompt":
        return _run_per_prompt_values(cfg)
    out = cfg.root / "value"
    inputs = stage_inputs(cfg, training=cfg.value_from_data, decoding=not cfg.value_from_data)
    stored = _stored_reward_records(inputs) if cfg.value_from_data else None
    config = value_config(cfg)
    dtype = configured_reference_dtype(cfg)
    targets_from = (
        {"stored rewards": True} if cfg.value_from_data else _decoded_targets(cfg, inputs)
    )
    fingerprint = fingerprint_of(
        "value",
        inputs.reference_fingerprint,
        _validation_fingerprint(inputs, stored),
        targets_from,
        asdict(config),
        tokenization(cfg),
        dtype,
    )
    # A head saved before heads recorded their model is fitted again: no stage could use it.
    if stage_done(out, fingerprint) and value_head_model(out) is not None:
        logger.info("value: up to date (%s)", out)
        return _checked_reward(inputs, out, "validation")
    with running_stage(out, fingerprint, "value"):
        model, tokenizer = load_model_for_inference(inputs.reference, dtype)
        prompts, targets, samples = (
            _stored_targets(cfg, stored, tokenizer)
            if stored is not None
            else _sampled_targets(inputs, model, tokenizer, inputs.splits.val, "validation")
        )
        head, report = fit_value_head(model, tokenizer, prompts, targets, config)
        report["targets_from"] = (
            "data rewards (approximation)" if cfg.value_from_data else "reference samples"
        )

        def write() -> None:
            made_for = model_record(inputs.reference, inputs.reference_fingerprint)
            save_value_head(head, out, report, made_for)
            plot_value_fit(report, out / "value_fit.png")
            _write_jsonl(out / "value_samples.jsonl", samples)

        on_main_process(write)
        finish_stage(out, fingerprint, "value", heldout_mse=report["heldout_mse"])
    logger.info(
        "value: V(x) fitted on %s of π_ref, checked on %s: MSE %s, "
        "Pearson %s, explained variance %s%s; metrics in %s, plot in value_fit.png",
        counted(report["n_train"], "sample"),
        counted(report["n_heldout_prompts"], "held-out prompt"),
        formatted(report["heldout_mse"], ".4f"),
        formatted(report["pearson"], ".2f"),
        formatted(report["explained_variance"], ".2f"),
        _interval_text(report.get("explained_variance_interval")),
        out / "value_metrics.json",
    )
    return _checked_reward(inputs, out, "validation")


def _interval_text(interval: list[float] | None) -> str:
    return "" if interval is None else f" (95% interval {interval[0]:.2f} to {interval[1]:.2f})"


def _run_per_prompt_values(cfg: PipelineConfig) -> Path:
    """V(x) of each training prompt: the mean reward of π_ref's own answers to it
    (`alol.models.prompt_values`), written to `run_dir/value/prompt_values.json` with the
    scored answers in value_samples.jsonl."""
    out = cfg.root / "value"
    inputs = stage_inputs(cfg, training=False, decoding=True)
    dtype = configured_reference_dtype(cfg)
    tokenizer = load_tokenizer(inputs.reference)
    # the prompts as the advantage stage looks them up (a chat template can change them), in
    # an order that the data file's order does not change
    rendered = sorted({render(cfg, p, tokenizer) for p in unique_prompts(inputs.train_pairs)})
    fingerprint = fingerprint_of(
        "value",
        inputs.reference_fingerprint,
        json_sha256(rendered),
        {**_decoded_targets(cfg, inputs), "estimate": "per_prompt"},
        tokenization(cfg),
        dtype,
    )
    if stage_done(out, fingerprint) and prompt_values_model(out) is not None:
        logger.info("value: up to date (%s)", out)
        return _checked_reward(inputs, out, "training")
    with running_stage(out, fingerprint, "value"):
        model, tokenizer = load_model_for_inference(inputs.reference, dtype)
        prompts, targets, samples = _sampled_targets(
            inputs, model, tokenizer, inputs.train_pairs, "training"
        )
        values = mean_per_prompt(prompts, targets)
        report = per_prompt_report(values, cfg.value_samples)

        def write() -> None:
            made_for = model_record(inputs.reference, inputs.reference_fingerprint)
            save_prompt_values(out, values, made_for, report)
            write_json(out / METRICS_FILE, report)
            _write_jsonl(out / "value_samples.jsonl", samples)

        on_main_process(write)
        finish_stage(out, fingerprint, "value", prompts=len(values))
    logger.info(
        "value: V(x) is the mean reward of π_ref's %s to each of %s (mean %s, sd across "
        "prompts %s); values in %s",
        counted(cfg.value_samples, "answer"),
        counted(report["n_prompts"], "training prompt"),
        formatted(report["mean"], ".3f"),
        formatted(report["sd_across_prompts"], ".3f"),
        out / VALUES_FILE,
    )
    return _checked_reward(inputs, out, "training")


def _checked_reward(inputs: StageInputs, out: Path, which: str) -> Path:
    """`out`, once the stock probes are scored against π_ref's answers (`alol.pipeline.
    reward_probes`); V fitted on the data's stored rewards has no answers of π_ref to beat."""
    if not inputs.cfg.value_from_data:
        check_reward_probes(inputs, out, which)
    return out


def _decoded_targets(cfg: PipelineConfig, inputs: StageInputs) -> dict:
    """What V's targets depend on when π_ref's answers are decoded and scored."""
    return {
        "reward": inputs.reward_fingerprint,
        "decoding": value_generation_config(cfg).deciding_settings(),
        # named only when on, so heads fitted before the setting existed stay up to date
        **({"missing_eos_penalty": cfg.missing_eos_penalty} if cfg.missing_eos_penalty else {}),
    }


def _validation_fingerprint(inputs: StageInputs, stored: list[RewardRecord] | None) -> str:
    """What V is fitted from: the stored answers and rewards with `value_from_data`, otherwise
    the validation prompts alone (π_ref answers them), so a prompt-only file is enough."""
    if stored is not None:
        return fingerprint_records(stored)
    return json_sha256(unique_prompts(inputs.splits.val))


def _stored_reward_records(inputs: StageInputs) -> list[RewardRecord]:
    """The validation answers with their stored rewards, which `value_from_data` fits V on;
    a record that lacks either is refused where it stands, not left out."""
    how = (
        "value_from_data fits V on the validation answers' stored rewards; give each a response "
        "and a reward, or drop value_from_data to fit V on π_ref's own scored answers"
    )
    answerless = next((r for r in inputs.splits.val if isinstance(r, PromptRecord)), None)
    if answerless is not None:
        raise DataError(f"a prompt without an answer: {how}", field="response").at(
            *split_source(answerless.source)
        )
    records = to_reward_records(inputs.splits.val)
    unscored = next((r for r in records if r.total_reward is None), None)
    if unscored is not None:
        raise DataError(f"an answer without a stored reward: {how}", field="reward").at(
            *split_source(unscored.source)
        )
    return records


def _stored_targets(cfg: PipelineConfig, records: list[RewardRecord], tokenizer):
    """(prompts, targets, samples) from the data's stored rewards."""
    logger.warning(
        "value: fitting V on the data's stored rewards, an approximation of E[R] under π_ref "
        "(the paper decodes from π_ref and scores with the reward)."
    )
    prompts = [render(cfg, r.prompt, tokenizer) for r in records]
    targets = [float(r.total_reward) for r in records]
    samples = [
        {"prompt": p, "response": r.response, "reward": t}
        for p, r, t in zip(prompts, records, targets, strict=True)
    ]
    return prompts, targets, samples


def _sampled_targets(inputs: StageInputs, model, tokenizer, records: list, which: str):
    """(prompts, targets, samples): π_ref's answers to the prompts of `records` (the
    `which` ones), scored by the reward, and the decoded samples to inspect."""
    cfg = inputs.cfg
    reward = inputs.load_reward()
    if reward is None:
        fallback = (
            "or --value-from-data to fit V on the stored rewards (an approximation)"
            if cfg.value_estimate == "head"
            else "or --value-estimate head --value-from-data to fit a value head on the stored "
            "rewards (an approximation)"
        )
        raise AlolError(
            "`alol value` needs a reward function (--reward, or --reward-model to fit one) to "
            f"score the reference's samples, {fallback}."
        )
    prompts = [render(cfg, p, tokenizer) for p in unique_prompts(records)]
    k = cfg.value_samples
    generation = value_generation_config(cfg)
    scored = gather_in_order(
        len(prompts),
        lambda indices: decode_and_score(
            cfg, model, tokenizer, prompts, indices, reward, generation
        ),
    )
    flat_prompts = [p for p in prompts for _ in range(k)]
    flat = [(answer.text, s) for pairs in scored for answer, s in pairs]
    refuse_mostly_empty_samples(flat_prompts, [response for response, _ in flat], which)
    targets = [s["total"] for _, s in flat]
    samples = [
        {"prompt": p, "response": r, "reward": s}
        for p, (r, s) in zip(flat_prompts, flat, strict=True)
    ]
    return flat_prompts, targets, samples


def refuse_mostly_empty_samples(prompts: list[str], responses: list[str], which: str) -> None:
    """V fitted on (or averaged from) the reward of saying nothing would make every data
    response look good."""
    empty = [i for i, response in enumerate(responses) if not response.strip()]
    if len(empty) * 2 > len(responses):
        raise AlolError(
            f"π_ref answered {len(empty)} of {len(responses)} {which} prompts with an empty "
            f"response (for example {prompts[empty[0]][-200:]!r}), so V(x) would be fitted on "
            "the reward of saying nothing. Check how prompts reach the model: a chat model needs "
            "its chat template (message-list prompts, or --string-prompts chat for plain "
            "strings); that the generation budget is not tiny (--max-new-tokens); or give π_ref "
            "an SFT stage on the data first (--model instead of --reference)."
        )


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(row, default=float) + "\n" for row in rows))
