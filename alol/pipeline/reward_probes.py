"""Before any training, whether the reward pays a stock answer more than π_ref's own answers.

Offline RL climbs whatever the reward pays. If "I don't know." given to every prompt scores
above π_ref's answers, every evasive answer in the data has a positive advantage and a policy
can raise the reward by evading; the evaluation's audit catches the model that learnt it, hours
later. The value stage has already scored π_ref's answers to its prompts, so the stock
`probe_answers` and the `constant_answers` most frequent training answers (those A-LoL draws
most) are scored on the same prompts here, and the stage warns (or, with
`refuse_paid_probes`, stops) before a step is trained. The scores are kept in
`run_dir/value/probes/` and the comparison in `run_dir/value/reward_probes.json`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from alol.atomic import write_json
from alol.distributed import on_main_process
from alol.errors import AlolError
from alol.fingerprint import file_sha256, fingerprint_of
from alol.pipeline.answers import component_weights, stock_answer_scores
from alol.pipeline.inputs import StageInputs
from alol.reports.collapse import most_frequent_answers, normalise_answer, short_text
from alol.reports.constant_answers import changes_by_part, described, reward_components

logger = logging.getLogger(__name__)

PROBES_FILE = "reward_probes.json"


@dataclass
class ProbeCheck:
    """One stock answer given to every prompt of the value stage, against π_ref's answers."""

    text: str
    origin: str
    """"probe" (one of `probe_answers`) or "training data, N times"."""
    reward: float
    """Its mean reward over the prompts."""
    reference_reward: float
    """The mean reward of π_ref's answers to the same prompts (cut answers pay the penalty)."""
    share_above: float
    """The share of prompts where it scores above the mean of π_ref's answers to that prompt."""
    by_part: dict[str, float]
    """Each component's change from π_ref's answers, for a reward of several parts."""

    @property
    def paid(self) -> bool:
        return self.reward > self.reference_reward


def compare_probes(
    samples: list[dict],
    probe_scores: dict[tuple[str, str], list[dict[str, float]]],
    prompts: list[str],
    weights: dict[str, float],
) -> list[ProbeCheck]:
    """Each probe's scores (one per prompt of `prompts`, under its text and origin) against
    π_ref's scored `samples` (rows of value_samples.jsonl: prompt, response, reward with its
    components), each component counted at its `weights` in the total."""
    per_prompt: dict[str, list[float]] = {}
    for sample in samples:
        per_prompt.setdefault(sample["prompt"], []).append(sample["reward"]["total"])
    reference_means = [sum(per_prompt[p]) / len(per_prompt[p]) for p in prompts]
    reference_parts = reward_components(_mean_parts([s["reward"] for s in samples]), weights)
    checks = []
    for (text, origin), scores in probe_scores.items():
        totals = [s["total"] for s in scores]
        above = sum(t > r for t, r in zip(totals, reference_means, strict=True))
        checks.append(
            ProbeCheck(
                text=text,
                origin=origin,
                reward=sum(totals) / len(totals),
                reference_reward=sum(reference_means) / len(reference_means),
                share_above=above / len(prompts),
                by_part=changes_by_part(
                    reward_components(_mean_parts(scores), weights), reference_parts
                ),
            )
        )
    return checks


def _mean_parts(scores: list[dict[str, float]]) -> dict[str, float]:
    """The mean of each component (the total left out) over scores that may lack some (the
    missing-EOS penalty appears only on π_ref's cut answers)."""
    names = {name for s in scores for name in s if name != "total"}
    return {name: sum(s.get(name, 0.0) for s in scores) / len(scores) for name in names}


def paid_probe_message(check: ProbeCheck, which: str) -> str:
    """The warning for a paid probe, with the parts of a summed reward that pay it."""
    parts = f"; by part: {described(check.by_part)}" if check.by_part else ""
    return (
        "the reward pays a stock answer more than π_ref's own: "
        f"“{short_text(check.text)}” ({check.origin}) given to every {which} prompt scores "
        f"{check.reward:.3f} against π_ref's {check.reference_reward:.3f} (above π_ref's "
        f"answers on {check.share_above:.0%} of the prompts{parts}). Training on this reward "
        "can raise it by evading rather than answering: answers like it in the data get "
        "positive advantages"
    )


def check_reward_probes(inputs: StageInputs, out: Path, which: str) -> list[ProbeCheck]:
    """Score the stock answers (`stock_answers`) on the prompts of π_ref's scored answers in
    `out` (value_samples.jsonl), write the comparison and warn for each one the reward pays
    more than π_ref's answers; with `refuse_paid_probes`, refuse to go on instead. A comparison
    already written for the same answers, stock and reward is read back, so an up-to-date
    stage does not load the reward."""
    cfg = inputs.cfg
    stock = stock_answers(inputs)
    if not stock:
        return []
    samples_file = out / "value_samples.jsonl"
    key = fingerprint_of(
        "reward probes", file_sha256(samples_file), stock, inputs.reward_fingerprint
    )
    checks = _checks_written(out / PROBES_FILE, key)
    if checks is None:
        checks = _probe_checks(inputs, out, samples_file, stock)
        report = {"fingerprint": key, "prompts": which, "probes": [_row(c) for c in checks]}
        on_main_process(lambda: write_json(out / PROBES_FILE, report))
    paid = [paid_probe_message(c, which) for c in checks if c.paid]
    if paid and cfg.refuse_paid_probes:
        raise AlolError(
            f"{paid[0]}. Change the reward (gate the part that pays it, or drop that part), or "
            "set refuse_paid_probes: false to train anyway and let the evaluation's audit judge "
            f"the models; every probe's figures are in {out / PROBES_FILE}."
        )
    for message in paid:
        logger.warning("value: %s.", message)
    return checks


def _probe_checks(
    inputs: StageInputs, out: Path, samples_file: Path, stock: dict[str, str]
) -> list[ProbeCheck]:
    """Each stock answer scored on the prompts of π_ref's answers and compared with them."""
    samples = [json.loads(line) for line in samples_file.read_text(encoding="utf-8").splitlines()]
    reward = inputs.load_reward()
    prompts = sorted({s["prompt"] for s in samples})
    probe_scores = {
        (text, origin): stock_answer_scores(
            out / "probes", text, prompts, reward, inputs.reward_fingerprint, inputs.cfg
        )
        for text, origin in stock.items()
    }
    weights = component_weights(reward, prompts[0], next(iter(stock)))
    return compare_probes(samples, probe_scores, prompts, weights)


def _checks_written(path: Path, key: str) -> list[ProbeCheck] | None:
    """The comparison in `path` when it was written under `key`, else None."""
    if not path.is_file():
        return None
    report = json.loads(path.read_text(encoding="utf-8"))
    if report.get("fingerprint") != key:
        return None
    return [
        ProbeCheck(**{name: value for name, value in row.items() if name != "paid"})
        for row in report["probes"]
    ]


def stock_answers(inputs: StageInputs) -> dict[str, str]:
    """The answers to try, each with where it comes from: the `constant_answers` most frequent
    training answers, then the `probe_answers` that are none of them."""
    cfg = inputs.cfg
    responses = [r.response for r in inputs.train_pairs]
    stock = {
        text: f"training data, {count} times"
        for text, count in most_frequent_answers(responses, cfg.constant_answers)
    }
    seen = {normalise_answer(text) for text in stock}
    for text in cfg.probe_answers:
        if normalise_answer(text) not in seen:
            stock[text] = "probe"
            seen.add(normalise_answer(text))
    return stock


def _row(check: ProbeCheck) -> dict:
    return {**asdict(check), "paid": check.paid}
