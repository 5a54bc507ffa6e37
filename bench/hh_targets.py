"""The HH benchmark's targets, judged from its own rows: the A-LoL variant is chosen on the
validation prompts (the reward of each variant's kept checkpoint there, among the variants
whose kept checkpoints' validation answers are not degenerate), never on test, and each
target gets a verdict with the figures behind it. A target whose rows are missing is
"not measured", never "holds"."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass

from alol.reports.audit import at_chance
from alol.reports.metrics import agreement_of

A_LOL_VARIANTS = ("a_lol", "a_lol_seq", "a_lol_ref_free", "a_lol_kl")
LEARNED_JUDGES = ("helpfulness", "harmlessness")
JUDGED_BASELINES = ("wbc", "dpo", "kto")
DISTINCT_2_MARGIN = 0.02


@dataclass(frozen=True)
class Verdict:
    """One target: whether it holds for the chosen variant, and the figures that say so."""

    target: str
    holds: bool | None
    """None: a row it needs is missing."""
    figures: str


def validation_rewards(per_seed: dict) -> dict[str, float]:
    """Each A-LoL variant's mean validation reward (its kept checkpoints'), for the variants
    run on every seed where any variant ran (a variant missing a seed cannot win by missing
    its worst one)."""
    runs = [run for run in per_seed.values() if any(v in run["rows"] for v in A_LOL_VARIANTS)]
    return {
        variant: statistics.fmean(run["rows"][variant]["validation_reward"] for run in runs)
        for variant in A_LOL_VARIANTS
        if runs and all(_validated(run, variant) for run in runs)
    }


def degenerate_variants(per_seed: dict) -> list[str]:
    """The A-LoL variants whose kept checkpoint, on some seed, gave degenerate validation
    answers (collapsed, rambling or looping; its training found no healthy checkpoint)."""
    return [
        variant
        for variant in A_LOL_VARIANTS
        if any(run["rows"].get(variant, {}).get("kept_degenerate") for run in per_seed.values())
    ]


def chosen_variant(per_seed: dict) -> str | None:
    """The A-LoL variant whose kept checkpoints score the highest mean validation reward,
    passing over those whose validation answers were degenerate while another's were not:
    the choice applies the checkpoint selection's rule across variants."""
    rewards = validation_rewards(per_seed)
    healthy = {v: r for v, r in rewards.items() if v not in degenerate_variants(per_seed)}
    candidates = healthy or rewards
    return max(candidates, key=candidates.__getitem__) if candidates else None


def targets(per_seed: dict, data: dict | None = None) -> dict:
    """The chosen variant, every variant's mean validation reward and each target's verdict;
    `data` (the data's human-chosen test answers, scored like the models) is quoted beside the
    judged targets, so a target above what the data holds reads as such."""
    variant = chosen_variant(per_seed)
    if variant is None:
        return {"variant": None, "verdicts": []}
    runs = [run for run in per_seed.values() if variant in run["rows"]]
    return {
        "variant": variant,
        "seeds": [seed for seed, run in per_seed.items() if variant in run["rows"]],
        "validation_reward": validation_rewards(per_seed),
        "degenerate": degenerate_variants(per_seed),
        "verdicts": [asdict(verdict) for verdict in verdicts(runs, variant, data)],
    }


def verdicts(runs: list[dict], variant: str, data: dict | None = None) -> list[Verdict]:
    """Each target for `variant` over `runs` (the seeds it ran on), in the benchmark's order."""
    return [
        _on_every_seed(
            runs,
            variant,
            "reward above π_ref and NLL on every seed",
            "reward",
            ("reference", "nll"),
        ),
        _in_the_mean(
            runs, variant, "helpfulness", _field("helpfulness"), ("reference", "nll"), data=data
        ),
        _in_the_mean(
            runs, variant, "relevance", _field("relevance"), ("reference", "nll"), data=data
        ),
        _in_the_mean(
            runs, variant, "harmlessness", _field("harmlessness"), ("reference",), data=data
        ),
        _in_the_mean(
            runs, variant, "distinct-2", _field("distinct_2"), ("nll",), DISTINCT_2_MARGIN
        ),
        _no_flag(runs, variant),
        _in_the_mean(
            runs,
            variant,
            "the mean of the learned judges",
            _judges_mean,
            JUDGED_BASELINES,
            data=data,
        ),
        _within_nll_steps(runs, variant),
    ]


def _validated(run: dict, variant: str) -> bool:
    return run["rows"].get(variant, {}).get("validation_reward") is not None


def _judges_mean(row: dict) -> float | None:
    scores = [row.get(judge) for judge in LEARNED_JUDGES]
    return None if None in scores else statistics.fmean(scores)


def _field(key: str) -> Callable[[dict], float | None]:
    return lambda row: row.get(key)


def _in_the_mean(
    runs: list[dict],
    variant: str,
    label: str,
    measure: Callable[[dict], float | None],
    others: tuple[str, ...],
    margin: float = 0.0,
    data: dict | None = None,
) -> Verdict:
    """`variant`'s mean of `measure` at or above each of `others`' (less `margin`), each pair
    of means over the seeds both ran on; `data`'s measure, where given, is quoted after them
    and decides nothing."""
    less = f" − {margin:g}" if margin else ""
    target = f"{label} at or above {', '.join(_shown(o) for o in others)}{less} in the mean"
    holds, figures = [], []
    for other in others:
        both = [run for run in runs if other in run["rows"]]
        ours = [measure(run["rows"][variant]) for run in both]
        theirs = [measure(run["rows"][other]) for run in both]
        if not both or None in ours + theirs:
            holds.append(None)
            figures.append(f"{_shown(other)}: not measured")
            continue
        mean_ours, mean_theirs = statistics.fmean(ours), statistics.fmean(theirs)
        holds.append(mean_ours >= mean_theirs - margin)
        figures.append(
            f"{mean_ours:.3f} against {_shown(other)} {mean_theirs:.3f} ({_seeds(len(both))})"
        )
    if data is not None and measure(data) is not None:
        figures.append(f"the data's human-chosen answers {measure(data):.3f}")
    return Verdict(target, _all(holds), "; ".join(figures))


def _on_every_seed(
    runs: list[dict], variant: str, target: str, key: str, others: tuple[str, ...]
) -> Verdict:
    holds, figures = [], []
    for run in runs:
        rows = run["rows"]
        missing = [o for o in others if o not in rows]
        if missing:
            holds.append(None)
            figures.append(f"{', '.join(map(_shown, missing))} not run on a seed")
            continue
        holds.append(all(rows[variant][key] > rows[o][key] for o in others))
        against = ", ".join(f"{_shown(o)} {rows[o][key]:.3f}" for o in others)
        figures.append(f"{rows[variant][key]:.3f} against {against}")
    return Verdict(target, _all(holds), "; ".join(figures))


def _no_flag(runs: list[dict], variant: str) -> Verdict:
    flags = [run["rows"][variant].get("flag") for run in runs]
    raised = [flag for flag in flags if flag]
    figures = f"flagged on {len(raised)} of {_seeds(len(runs))}" + (
        f": {raised[0]}" if raised else ""
    )
    return Verdict("no audit flag on any seed", not raised, figures)


def _within_nll_steps(runs: list[dict], variant: str) -> Verdict:
    steps = [
        (run["rows"][variant].get("steps"), run["rows"].get("nll", {}).get("steps")) for run in runs
    ]
    if any(theirs is None or ours is None for ours, theirs in steps):
        return Verdict("trained within NLL's step budget", None, "steps not measured on a seed")
    figures = "; ".join(f"{ours} steps against NLL's {theirs}" for ours, theirs in steps)
    return Verdict("trained within NLL's step budget", all(o <= t for o, t in steps), figures)


def _all(holds: list[bool | None]) -> bool | None:
    if False in holds:
        return False
    return None if None in holds else True


def _shown(name: str) -> str:
    return {"reference": "π_ref", "nll": "NLL"}.get(name, name)


def _seeds(count: int) -> str:
    return f"{count} seed" + ("" if count == 1 else "s")


def targets_markdown(result: dict) -> list[str]:
    """The targets' section of the benchmark's markdown."""
    found = result.get("targets") or {}
    if not found.get("variant"):
        return [
            "No target is judged: no A-LoL variant has a recorded validation reward on every "
            "seed where a variant ran."
        ]
    degenerate = found.get("degenerate", [])
    chosen = ", ".join(
        f"{v} {r:.3f}" + (" (degenerate)" if v in degenerate else "")
        for v, r in found["validation_reward"].items()
    )
    if len(found["validation_reward"]) == 1:
        chosen += ", the only variant run on those seeds"
    if degenerate:
        chosen += "; a degenerate one is chosen only when every one is"
    lines = [
        f"Targets, for the A-LoL variant chosen on the validation prompts, **{found['variant']}** "
        f"(mean validation reward of each variant's kept checkpoints: {chosen}), on "
        f"{'seed' if len(found['seeds']) == 1 else 'seeds'} {', '.join(map(str, found['seeds']))}:",
        "",
        "| target | verdict | figures |",
        "|---|---|---|",
    ]
    for verdict in found["verdicts"]:
        said = {True: "holds", False: "does not hold", None: "not measured"}[verdict["holds"]]
        lines.append(f"| {verdict['target']} | {said} | {verdict['figures']} |")
    return lines + _judges_at_chance_note(result.get("judges", {}))


def _judges_at_chance_note(judges: dict) -> list[str]:
    """A line under the verdicts when a learned judge they rest on orders its own held-out pairs
    no better than a coin: its verdicts, either way, say little about the human choices."""
    weak = []
    for name in LEARNED_JUDGES:
        agreement = agreement_of(judges.get(name, {}).get("heldout") or {})
        if at_chance(agreement):
            weak.append(f"{name} {agreement.accuracy:.0%} of {agreement.pairs}")
    if not weak:
        return []
    return [
        "",
        f"The learned judges' verdicts rest on judges no better than chance on their own "
        f"held-out pairs ({'; '.join(weak)}): a gain or a fall on them, and any verdict on "
        "their mean, says little about what the human choices measure.",
    ]
