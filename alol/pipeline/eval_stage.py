"""Stage 5, evaluation: reads the test prompts, the reward, the judges, π_ref and each trained
model in `run_dir/train/<objective>/final/` (or `cfg.eval_model`); decodes each model's
answers, scores them with the reward and every judge, weighs them under π_ref, gives constant
answers to every prompt, and audits the lot for reward hacking.

Writes `run_dir/eval/<name>/` (answers.jsonl, eval.json, report.md, samples.jsonl and the
kept scores), `run_dir/eval/audit.md` and `audit.json`, and `run_dir/eval/comparison.md`: the
comparison table, each group's part (when the test records have groups) and the audit's flags;
`run_dir/eval/samples.md`, the answers side by side (`alol.reports.samples_report`); with
judges, `run_dir/eval/reward_vs_judges.png`, each model's reward change against each judge's.
Only what changed is computed again (`alol.pipeline.answers`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from alol.atomic import write_json, write_text
from alol.config import PipelineConfig
from alol.data.splits import prompt_groups
from alol.distributed import on_main_process
from alol.errors import AlolError
from alol.pipeline.answers import (
    Answers,
    answer_scores,
    component_weights,
    decoded_answers,
    reference_logps,
    stock_answer_scores,
)
from alol.pipeline.inputs import (
    StageInputs,
    load_data,
    load_policy_for_eval,
    render,
    stage_inputs,
    unique_prompts,
)
from alol.pipeline.judges import Judge, configured_judges
from alol.pipeline.settings import audit_thresholds, configured_reference_dtype
from alol.pipeline.stage import stage_record
from alol.reports.audit import REFERENCE, Audit, ScoredAnswers, audit_models
from alol.reports.audit_report import audit_markdown, audit_summary
from alol.reports.collapse import collapse_of, most_frequent_answers, normalise_answer
from alol.reports.constant_answers import ConstantAnswer, reward_components
from alol.reports.eval_report import (
    EvalReport,
    changes_from_reference,
    comparison_table,
    evaluate_responses,
    warn_on_prompt_overlap,
    write_report,
)
from alol.reports.group_report import group_table
from alol.reports.plots import plot_reward_against_judges
from alol.reports.samples_report import samples_markdown
from alol.rewards import Reward, with_missing_eos_penalty
from alol.rewards.scoring import MISSING_EOS

logger = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """Every model's report, π_ref first, and the audit of them all."""

    reports: dict[str, EvalReport]
    audit: Audit

    def table(self, kept: dict[str, float] | None = None) -> str:
        """The comparison table, each group's part when the test prompts have groups, and
        the audit's flags."""
        return f"{self.results_tables(kept)}\n\n{audit_summary(self.audit)}"

    def results_tables(self, kept: dict[str, float] | None = None) -> str:
        """The comparison table and each group's part, for a report that gives the audit
        whole after them."""
        parts = [comparison_table(self.reports, kept), group_table(self.reports)]
        return "\n\n".join(part for part in parts if part)


def run_eval(cfg: PipelineConfig) -> Evaluation:
    """Decode test prompts with π_ref and each trained model, score, audit and compare."""
    if cfg.test_data is None:
        raise AlolError("`alol eval` needs --test-data (records whose prompts are decoded).")
    inputs = stage_inputs(cfg, training=False, decoding=True, records=cfg.train_data is not None)
    if inputs.reward_spec is None:
        raise AlolError(
            "`alol eval` needs a reward function (--reward) to score the decoded responses."
        )
    reward = inputs.load_reward()
    judges = configured_judges(inputs)
    for judge in judges:
        judge.load()
    test_records = load_data(cfg.test_data, cfg)
    test_prompts = unique_prompts(test_records)
    models = {REFERENCE: (inputs.reference, None), **_trained_models(inputs)}
    answers = {
        name: decoded_answers(
            cfg,
            name,
            path,
            test_prompts,
            on_render=(lambda texts, tok: _warn_on_overlap(inputs, texts, tok))
            if name == REFERENCE
            else None,
            with_logps=name != REFERENCE,
            base=base,
        )
        for name, (path, base) in models.items()
    }
    scored = {name: _scored(inputs, a, reward, judges) for name, a in answers.items()}
    ratios = _log_ratios(inputs, answers)
    reports = _reports(cfg, answers, scored, ratios, prompt_groups(test_records))
    reference = answers[REFERENCE]
    weights = component_weights(reward, reference.prompts[0], reference.responses[0])
    constants = _constant_answers(inputs, answers, reward, judges, weights)
    audit = audit_models(
        {
            name: ScoredAnswers(
                reward=[s["total"] for s in scored[name][0]],
                judges=scored[name][1],
                responses=answers[name].responses,
                finished=answers[name].finished,
                log_ratio=reports[name].log_ratio,
                reward_components=reward_components(reports[name].reward_mean, weights),
            )
            for name in answers
        },
        constants,
        audit_thresholds(cfg),
        budget=cfg.new_token_budget,
        independent_judges={judge.name: judge.independent for judge in judges},
        judge_agreement={judge.name: judge.agreement for judge in judges},
        missing_eos_penalty=cfg.missing_eos_penalty,
    )
    evaluation = Evaluation(reports, audit)
    out = cfg.root / "eval"

    def write() -> None:
        write_text(out / "audit.md", audit_markdown(audit))
        write_json(out / "audit.json", audit.summary())
        write_text(out / "comparison.md", evaluation.table() + "\n")
        write_text(out / "samples.md", samples_markdown(reports))
        if judges and len(reports) > 1:
            flagged = {name for name, model in audit.models.items() if model.flag}
            changes = changes_from_reference(reports)
            plot_reward_against_judges(changes, flagged, out / "reward_vs_judges.png")

    on_main_process(write)
    for flag in audit.flags:
        logger.warning("audit: %s", flag)
    for warning in audit.judge_warnings:
        logger.warning("audit: judge %s", warning)
    logger.info("eval: reports, samples, the audit and the comparison in %s", out)
    return evaluation


def _trained_models(inputs: StageInputs) -> dict[str, tuple[Path, Path | None]]:
    """`cfg.eval_model`, or each objective's final model, with the weights an adapter of it is
    merged into: this run's π_ref where its train stage records it was trained from it (a moved
    run folder keeps π_ref there, not in the folder the adapter's config names); None, that
    folder, for an `eval_model` from elsewhere and a model trained before alol recorded its
    π_ref. An objective's model recorded as trained from another π_ref (retrained or replaced
    since) is refused: its adapter would be merged into weights it was not trained on, and its
    drift measured from them."""
    cfg = inputs.cfg
    if cfg.eval_model:
        models = {"model": Path(cfg.eval_model)}
    else:
        models = {name: cfg.root / "train" / name / "final" for name in cfg.objectives}
    trained = {}
    for name, path in models.items():
        if not path.exists():
            raise AlolError(
                f"no trained model at {path}: run `alol train --objectives {name}` first."
            )
        trained_from = stage_record(path.parent).get("reference")  # None: not recorded
        from_this_reference = trained_from == inputs.reference_fingerprint
        if trained_from is not None and not from_this_reference and not cfg.eval_model:
            raise AlolError(
                f"{path} was trained from another π_ref than this run's, {inputs.reference} "
                f"(retrained or replaced since): train {name} again (`alol run` does)."
            )
        trained[name] = (path, inputs.reference if from_this_reference else None)
    return trained


def _warn_on_overlap(inputs: StageInputs, texts: list[str], tokenizer) -> None:
    if inputs.splits is None:
        return
    fits_v = inputs.cfg.value_estimate == "head"
    warn_on_prompt_overlap(
        texts,
        [render(inputs.cfg, p, tokenizer) for p in unique_prompts(inputs.splits.val)],
        "validation prompts (which fit V and select checkpoints)"
        if fits_v
        else "validation prompts (which select checkpoints)",
    )


def _scored(
    inputs: StageInputs, answers: Answers, reward: Reward, judges: list[Judge]
) -> tuple[list[dict[str, float]], dict[str, list[float]]]:
    """The reward's score dicts and each judge's total, per answer."""
    cfg = inputs.cfg
    scores = with_missing_eos_penalty(
        answer_scores(answers, reward, inputs.reward_fingerprint, "reward", cfg),
        answers.finished,
        cfg.missing_eos_penalty,
    )
    judged = {
        judge.name: [
            s["total"]
            for s in answer_scores(
                answers, judge.reward, judge.fingerprint, f"judge-{judge.name}", cfg
            )
        ]
        for judge in judges
    }
    return scores, judged


def _log_ratios(inputs: StageInputs, answers: dict[str, Answers]) -> dict[str, list[float]]:
    """log π_θ(y|x) − log π_ref(y|x) of each trained model's answers; π_ref is loaded only
    when some model's are not kept yet."""
    cfg = inputs.cfg
    trained = {name: a for name, a in answers.items() if name != REFERENCE}
    ref_logps = reference_logps(
        trained,
        inputs.reference_fingerprint,
        lambda: load_policy_for_eval(inputs.reference, configured_reference_dtype(cfg)),
        cfg,
    )
    return {
        name: [row.logp - r for row, r in zip(a.rows, ref_logps[name], strict=True)]
        for name, a in trained.items()
    }


def _reports(
    cfg: PipelineConfig,
    answers: dict[str, Answers],
    scored: dict[str, tuple[list[dict[str, float]], dict[str, list[float]]]],
    ratios: dict[str, list[float]],
    groups: list[str] | None,
) -> dict[str, EvalReport]:
    reference_scores, reference_judges = scored[REFERENCE]
    reports = {}
    for name, a in answers.items():
        scores, judged = scored[name]
        is_reference = name == REFERENCE
        reports[name] = evaluate_responses(
            a.prompts,
            a.responses,
            scores,
            None if is_reference else reference_scores,
            finished=a.finished,
            judges=judged,
            reference_judges=None if is_reference else reference_judges,
            log_ratios=ratios.get(name),
            groups=groups,
        )
        on_main_process(
            lambda report=reports[name], folder=a.folder, title=f"{name} on {cfg.test_data}": (
                write_report(report, folder, title=title)
            )
        )
    return reports


def _constant_answers(
    inputs: StageInputs,
    answers: dict[str, Answers],
    reward: Reward,
    judges: list[Judge],
    weights: dict[str, float],
) -> list[ConstantAnswer]:
    """The training data's most frequent answers, the stock `probe_answers` and each model's
    own most frequent answer, each given to every test prompt and scored by the reward and
    every judge (kept in `run_dir/eval/constants/`)."""
    cfg = inputs.cfg
    candidates: dict[str, ConstantAnswer] = {}
    if inputs.splits is not None and cfg.constant_answers:
        responses = [r.response for r in inputs.train_pairs]
        for text, count in most_frequent_answers(responses, cfg.constant_answers):
            candidates[normalise_answer(text)] = ConstantAnswer(
                text, f"training data ({count} times)", 0.0, {}
            )
    for text in cfg.probe_answers:
        candidates.setdefault(normalise_answer(text), ConstantAnswer(text, "probe", 0.0, {}))
    cut: set[str] = set()
    for name, a in answers.items():
        top = collapse_of(a.responses, a.finished).top_answer
        constant = candidates.setdefault(normalise_answer(top), ConstantAnswer(top, "", 0.0, {}))
        constant.models.append(name)
        if _always_cut(top, a):
            cut.add(normalise_answer(top))
    prompts = answers[REFERENCE].prompts
    folder = cfg.root / "eval" / "constants"
    fingerprint = inputs.reward_fingerprint
    for key, constant in candidates.items():
        models = ", ".join("π_ref" if m == REFERENCE else m for m in constant.models)
        own = f"most frequent answer of {models}" if models else ""
        constant.origin = "; ".join(part for part in (constant.origin, own) if part)
        means = _mean_scores(
            stock_answer_scores(folder, constant.text, prompts, reward, fingerprint, cfg)
        )
        constant.reward = means["total"]
        constant.components = reward_components(means, weights)
        if key in cut and cfg.missing_eos_penalty:
            constant.reward -= cfg.missing_eos_penalty
            constant.components[MISSING_EOS] = -cfg.missing_eos_penalty
        constant.judges = {
            judge.name: _mean_scores(
                stock_answer_scores(
                    folder, constant.text, prompts, judge.reward, judge.fingerprint, cfg
                )
            )["total"]
            for judge in judges
        }
    return list(candidates.values())


def _always_cut(text: str, answers: Answers) -> bool:
    """Whether a model gave `text` only as an answer cut at the token budget: given to every
    prompt it pays `missing_eos_penalty` as the model's own copies of it did."""
    key = normalise_answer(text)
    pairs = zip(answers.responses, answers.finished, strict=True)
    return not any(ended for response, ended in pairs if normalise_answer(response) == key)


def _mean_scores(scores: list[dict[str, float]]) -> dict[str, float]:
    """The mean total and components of one stock answer's scores over the prompts."""
    return {name: sum(s[name] for s in scores) / len(scores) for name in scores[0]}
