"""Stage 5, evaluation: reads the test prompts, the reward, π_ref and each trained model in
`run_dir/train/<objective>/final/` (or `cfg.eval_model`), decodes and scores their responses,
and writes eval.json, report.md and samples.jsonl to `run_dir/eval/<name>/` and the comparison
of all of them to `run_dir/eval/comparison.md`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from alol.atomic import write_text
from alol.config import PipelineConfig
from alol.distributed import gather_in_order, on_main_process
from alol.errors import AlolError
from alol.eval_report import (
    EvalReport,
    comparison_table,
    evaluate_responses,
    read_report,
    warn_on_prompt_overlap,
    write_report,
)
from alol.fingerprint import fingerprint_model, fingerprint_of
from alol.pipeline.decoding import decode_and_score
from alol.pipeline.inputs import (
    check_context_length,
    configured_reward,
    load_data,
    load_policy_for_eval,
    load_splits,
    reference_path,
    render,
    reward_fingerprint,
    unique_prompts,
)
from alol.pipeline.settings import configured_reference_dtype, generation_config, tokenization
from alol.pipeline.stage import begin_stage, finish_stage, stage_done
from alol.rewards import Reward

logger = logging.getLogger(__name__)


def run_eval(cfg: PipelineConfig) -> dict[str, EvalReport]:
    """Decode test prompts with π_ref and each trained model, score, and compare."""
    if cfg.test_data is None:
        raise AlolError("`alol eval` needs --test-data (records whose prompts are decoded).")
    reward = configured_reward(cfg)
    if reward is None:
        raise AlolError(
            "`alol eval` needs a reward function (--reward) to score the decoded responses."
        )
    test_prompts = unique_prompts(load_data(cfg.test_data, cfg))
    ref = reference_path(cfg)
    check_context_length(cfg, ref, decoding=True)
    reports = {"reference": _eval_model(cfg, "reference", ref, test_prompts, reward, None)}
    models = (
        {"model": Path(cfg.eval_model)}
        if cfg.eval_model
        else {name: cfg.root / "train" / name / "final" for name in cfg.objectives}
    )
    for name, path in models.items():
        if not path.exists():
            raise AlolError(
                f"no trained model at {path}: run `alol train --objectives {name}` first."
            )
        reports[name] = _eval_model(cfg, name, path, test_prompts, reward, reports["reference"])
    table = comparison_table(reports)
    on_main_process(lambda: write_text(cfg.root / "eval" / "comparison.md", table + "\n"))
    logger.info("eval: reports, samples and the comparison in %s", cfg.root / "eval")
    return reports


def _eval_model(
    cfg: PipelineConfig,
    name: str,
    path: Path,
    prompts: list,
    reward: Reward,
    reference: EvalReport | None,
) -> EvalReport:
    """One model's report; one already written for the same model, prompts, reward, decoding
    and reference is read back instead of decoding again."""
    out = cfg.root / "eval" / name
    dtype = configured_reference_dtype(cfg)
    fingerprint = fingerprint_of(
        "eval",
        fingerprint_model(path),
        prompts,
        reward_fingerprint(cfg),
        asdict(generation_config(cfg)),
        tokenization(cfg),
        dtype,
        None if reference is None else [e.scores for e in reference.examples],
    )
    if stage_done(out, fingerprint):
        logger.info("eval %s: up to date (%s)", name, out)
        return read_report(out)
    begin_stage(out, fingerprint, "eval")
    model, tokenizer = load_policy_for_eval(path, dtype)
    texts = [render(cfg, p, tokenizer) for p in prompts]
    if name == "reference":
        val = load_splits(cfg).val
        warn_on_prompt_overlap(
            texts,
            [render(cfg, p, tokenizer) for p in unique_prompts(val)],
            "fit V and select checkpoints",
        )
    generation = generation_config(cfg)
    scored = gather_in_order(
        len(texts),
        lambda indices: [
            pairs[0]
            for pairs in decode_and_score(cfg, model, tokenizer, texts, indices, reward, generation)
        ],
    )
    responses = [answer.text for answer, _ in scored]
    scores = [s for _, s in scored]
    ref_scores = None if reference is None else [s.scores for s in reference.examples]
    finished = [answer.finished for answer, _ in scored]
    report = evaluate_responses(texts, responses, scores, ref_scores, finished=finished)
    on_main_process(lambda: write_report(report, out, title=f"{name} on {cfg.test_data}"))
    finish_stage(out, fingerprint, "eval", reward=report.reward_mean["total"])
    return report
