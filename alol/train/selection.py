"""Validation during training, and which validated checkpoint a run keeps.

Each validation pass decodes held-out prompts and scores the answers; the checkpoint kept at
the end is the one with the highest selection score (`select_by`: the reward, a judge, or a
weighted mix of them). A reward can be gamed, and the checkpoint that games it best would
win, so a checkpoint whose answers are degenerate by the audit's own measures is never kept
while a healthy one exists: answers collapsed onto one text (`collapse_share`), or, against
the validation pass before the first step (π_ref's answers), answers that run to the token
budget (`cut_off_share`) or loop (`loop_share`) more often beyond noise. When every one is
degenerate, the earliest, the fewest steps from π_ref, is kept and the run says so.
`ValidatedCheckpoints` is the part of `AlolTrainer` that does both.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from dataclasses import dataclass

from torch.utils.data import Dataset

from alol.atomic import write_json
from alol.distributed import gather_in_order, on_main_process
from alol.errors import AlolError
from alol.models.generate import GenerationConfig, generate_answers
from alol.reports.audit_thresholds import SIGNIFICANT_STANDARD_ERRORS
from alol.reports.collapse import loops
from alol.reports.eval_report import EvalReport, eval_metrics, evaluate_responses
from alol.rewards import Reward, score, with_missing_eos_penalty

logger = logging.getLogger(__name__)

REWARD = "reward"
"""The name `select_by` gives the training reward."""


def selection_weights(select_by: str) -> dict[str, float]:
    """'reward', a judge's name, or name=weight pairs separated by commas, as weights."""
    weights: dict[str, float] = {}
    for part in select_by.split(","):
        name, _, weight = part.partition("=")
        name = name.strip()
        if not name:
            raise AlolError(
                f"select_by {select_by!r}: give 'reward', a judge's name, or name=weight pairs "
                "separated by commas ('reward=0.5,helpfulness=0.5')"
            )
        try:
            value = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise AlolError(
                f"select_by {select_by!r}: the weight of {name!r} must be a number, got {weight!r}"
            ) from None
        if not math.isfinite(value):
            raise AlolError(f"select_by {select_by!r}: the weight of {name!r} must be finite")
        weights[name] = value
    return weights


def judges_selected_by(select_by: str) -> list[str]:
    """The judges `select_by` names (everything but the reward)."""
    return [name for name in selection_weights(select_by) if name != REWARD]


def metric_name(name: str, prefix: str = "eval") -> str:
    """The logged metric of the reward or of a judge."""
    return f"{prefix}_reward" if name == REWARD else f"{prefix}_judge/{name}"


def selection_score(metrics: dict[str, float], weights: dict[str, float], prefix: str) -> float:
    """The weighted sum of the named metrics of one validation pass."""
    return sum(weight * metrics[metric_name(name, prefix)] for name, weight in weights.items())


def is_better(
    value: float, degenerate: bool, best_value: float | None, best_degenerate: bool
) -> bool:
    """Whether a validated checkpoint replaces the best so far: a healthy one beats a
    degenerate one whatever their scores, a degenerate one never replaces another, and among
    healthy ones the higher score wins (ties keep the earlier)."""
    if best_value is None:
        return True
    if degenerate:
        return False
    return best_degenerate or value > best_value


@dataclass(frozen=True)
class DegenerationLimits:
    """The audit's thresholds, as validation applies them to a checkpoint's answers (None:
    that measure is not checked)."""

    collapse_share: float | None
    cut_off_share: float | None
    loop_share: float | None


def share_rose(share: float, start: float, prompts: int) -> bool:
    """Whether a share of the validation answers rose from the start's beyond noise: by
    `SIGNIFICANT_STANDARD_ERRORS` standard errors of the difference of two shares of
    `prompts` answers each."""
    spread = math.sqrt((share * (1 - share) + start * (1 - start)) / prompts)
    return share > start and share - start >= SIGNIFICANT_STANDARD_ERRORS * spread


def degenerate_findings(
    metrics: dict[str, float],
    start: dict[str, float] | None,
    limits: DegenerationLimits,
    prompts: int,
    prefix: str,
) -> list[str]:
    """Why a validation pass's answers are not worth keeping, the audit's way: collapsed onto
    one answer, or, against the pass before the first step (`start`, π_ref's answers; None
    before it exists), cut at the token budget or looping this often and more often beyond
    noise. A π_ref that rambles already leaves its trained models free to."""
    findings = []
    template = metrics[f"{prefix}_template_share"]
    if limits.collapse_share is not None and template >= limits.collapse_share:
        findings.append(f"{template:.0%} of answers are one answer")
    if start is None:
        return findings
    for key, limit, what in (
        ("cut_off_share", limits.cut_off_share, "run to the token budget"),
        ("loop_share", limits.loop_share, "loop"),
    ):
        share, before = metrics.get(f"{prefix}_{key}"), start.get(f"{prefix}_{key}")
        if limit is None or share is None or before is None or share < limit:
            continue
        if share_rose(share, before, prompts):
            findings.append(f"{share:.0%} of answers {what} against {before:.0%} before training")
    return findings


def validation_report(
    model,
    tokenizer,
    prompts: list[str],
    rewards: dict[str, Reward],
    generation: GenerationConfig,
    timeout: float | None,
    missing_eos_penalty: float | None = None,
) -> EvalReport:
    """Decode the rendered validation `prompts` (each process its share) and score the answers
    with every reward of `rewards`: the training reward under `REWARD`, the judges under their
    names."""

    def decode_and_score(indices: list[int]) -> list[tuple]:
        shard = [prompts[i] for i in indices]
        answers = [a[0] for a in generate_answers(model, tokenizer, shard, generation, False)]
        texts = [a.text for a in answers]
        scored = {
            name: score(
                reward, shard, texts, show_progress=False, timeout=timeout, record_numbers=indices
            )
            for name, reward in rewards.items()
        }
        return [
            (a, {name: rows[i] for name, rows in scored.items()}) for i, a in enumerate(answers)
        ]

    gathered = gather_in_order(len(prompts), decode_and_score)
    finished = [a.finished for a, _ in gathered]
    return evaluate_responses(
        prompts,
        [a.text for a, _ in gathered],
        with_missing_eos_penalty([s[REWARD] for _, s in gathered], finished, missing_eos_penalty),
        finished=finished,
        judges={
            name: [s[name]["total"] for _, s in gathered] for name in rewards if name != REWARD
        },
    )


def validation_metrics(
    report: EvalReport,
    select_by: str,
    limits: DegenerationLimits,
    start: dict[str, float] | None,
    prefix: str,
) -> tuple[dict[str, float], list[str]]:
    """The logged figures of a validation pass (with its share of looping answers), its
    selection score (`<prefix>_selection`) and whether its answers are degenerate
    (`<prefix>_degenerate`, 0 or 1), with the findings that make them so."""
    metrics = eval_metrics(report, prefix)
    metrics[f"{prefix}_loop_share"] = statistics.fmean(loops(e.response) for e in report.examples)
    metrics[f"{prefix}_selection"] = selection_score(metrics, selection_weights(select_by), prefix)
    findings = degenerate_findings(metrics, start, limits, report.n, prefix)
    metrics[f"{prefix}_degenerate"] = float(bool(findings))
    return metrics, findings


class ValidatedCheckpoints:
    """The validation and checkpoint choice of `AlolTrainer`: a `Trainer` mixin that reads the
    trainer's `reward`, `judges`, `eval_prompts`, `generation_config` and
    `start_validation_file`."""

    # --- evaluation ---------------------------------------------------------------------

    def evaluate(
        self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"
    ) -> dict:
        """Decode the validation prompts (each rank its share), score them with the reward and
        the judges, and log the scores, the degeneration measures and the selection score.
        Before the first step the figures are π_ref's: read from `start_validation_file` when
        another run from the same start wrote them, else written there."""
        kept = self.start_validation_file if self.state.global_step == 0 else None
        if kept is not None and kept.is_file():
            metrics = json.loads(kept.read_text(encoding="utf-8"))
            logger.info("validation before the first step: π_ref's figures read from %s", kept)
        else:
            metrics = self._validated(metric_key_prefix)
            if kept is not None:
                on_main_process(lambda: write_json(kept, metrics))
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(
            self.args, self.state, self.control, metrics
        )
        return metrics

    def _validated(self, metric_key_prefix: str) -> dict[str, float]:
        """One validation pass of the model as it is now."""
        if self.reward is None or not self.eval_prompts:
            raise ValueError("Evaluation needs a reward and eval_prompts.")
        model = self.accelerator.unwrap_model(self.model)
        report = validation_report(
            model,
            self.processing_class,
            self.eval_prompts,
            {REWARD: self.reward, **self.judges},
            self.generation_config,
            self.args.reward_timeout,
            self.args.missing_eos_penalty,
        )
        metrics, findings = validation_metrics(
            report,
            self.args.select_by,
            DegenerationLimits(
                self.args.collapse_share, self.args.cut_off_share, self.args.loop_share
            ),
            self.start_validation(),
            metric_key_prefix,
        )
        if findings and self.state.global_step:
            logger.info(
                "validation at step %d: %s; this checkpoint is kept only if every one is as bad",
                self.state.global_step,
                "; ".join(findings),
            )
        model.train()
        return metrics

    def _determine_best_metric(self, metrics: dict[str, float], trial) -> bool:
        """Trainer's choice of the best checkpoint, by `alol.train.selection.is_better`: a
        checkpoint whose validation answers are degenerate is never the best while another is
        not."""
        value = metrics["eval_selection"]
        degenerate = bool(metrics["eval_degenerate"])
        if not is_better(
            value,
            degenerate,
            self.state.best_metric,
            self.degenerate_at(self.state.best_global_step),
        ):
            return False
        self.state.best_metric = value
        self.state.best_global_step = self.state.global_step
        return True

    def validation_at(self, step: int | None) -> dict[str, float] | None:
        """The logged validation pass at `step`, from the history (which a resumed run reads
        back with its checkpoint)."""
        return next(
            (
                row
                for row in self.state.log_history
                if row.get("step") == step and "eval_selection" in row
            ),
            None,
        )

    def start_validation(self) -> dict[str, float] | None:
        """The validation pass before the first step (π_ref's answers): what rambling and
        looping are measured against. None before it ran, or for a run started without it."""
        return self.validation_at(0)

    def degenerate_at(self, step: int | None) -> bool:
        """Whether the validation at `step` found degenerate answers."""
        row = self.validation_at(step)
        return bool(row and row.get("eval_degenerate"))

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """Trainer.train, validating π_ref's answers first when the run starts (not when it
        resumes: the history it reads back holds them); says so when every validated
        checkpoint was degenerate."""
        self.args.eval_on_start = self.eval_dataset is not None and not resume_from_checkpoint
        output = super().train(resume_from_checkpoint, *args, **kwargs)
        if self.state.best_global_step and self.degenerate_at(self.state.best_global_step):
            logger.warning(
                "every validation pass found degenerate answers (collapsed, or rambling or "
                "looping more than before training); kept the earliest checkpoint, step %d, the "
                "closest to π_ref",
                self.state.best_global_step,
            )
        return output


class PromptList(Dataset):
    """The validation prompts as a dataset, so Trainer's evaluation schedule switches on."""

    def __init__(self, prompts: list[str]):
        self.prompts = prompts

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, index: int) -> str:
        return self.prompts[index]
