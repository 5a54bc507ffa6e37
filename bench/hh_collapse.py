"""Why A-LoL turns evasive on HH: the measurements of one seed of the judged HH benchmark,
taken from its artifacts (π_ref, V and the advantages; no policy is loaded, only the judges).

    python -m bench.hh_collapse              # after `python -m bench.hh_smollm2 --prepare`
    python -m bench.hh_collapse --seed 1 --results hh_collapse_seed1

Every figure is of the advantage A-LoL trains on: the recipe's, so the length-neutral A when
the recipe sets `length_neutral_advantage` (the paper's A otherwise, or with --paper-advantage).

- Draws: how A-LoL's sampler spreads its step budget over the positive-advantage examples
  (draws per unique example, the share of draws on the top 1% and 10%, the effective number
  of examples), for sampling ∝ A (the paper's), ∝ A in passes (`sample_in_passes`), ∝ √A (tempered) and uniform.
- What the top-advantage answers are: the share of short evasive templates (an apology or
  "I don't understand", under 15 words) and of short answers (under 8 words) among all
  training answers, the positive ones and the top 10% by A, with helpful-online and without.
- The A² weighting: each example counts ∝ (its draws) × A in the gradient; the share of that
  weight held by the evasive templates, for each sampling.
- V's error on short and long answers: on the validation prompts V(x) was fitted on,
  R(π_ref's answer) − V(x), split by the length of π_ref's answer; and the mean A of short and
  long training answers. V's level: its mean error on those held-out prompts, and its mean on
  the training prompts beside the mean reward of π_ref's answers to the validation prompts
  (a V that sits low makes more of the data positive).
- The importance weights' clip fraction of the trained A-LoL runs, when they exist.
- What the judges say of what the reward selects: each learned judge (never trained on) scores
  every training answer; per subset, its mean over all of them, the positive ones, the top 10%
  by A and under the gradient weight of the recipe's sampling, and its rank correlation with A.
  A selection that the judge rates below the data's own answers is what A-LoL learns to say.

Writes bench/results/<results>.{json,md} (hh_collapse by default).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from alol.data.table import AdvantageTable
from alol.method.leftover import budget_steps, length_neutral, response_words
from alol.method.sampling import PrioritySampler
from alol.pipeline.inputs import load_tokenizer, render
from alol.pipeline.tables import joined
from alol.reports.metrics import spearman
from alol.rewards import load_reward, score
from bench.answer_kinds import (
    SHORT_MAX_WORDS,
    is_clarifying_question,
    is_evasive,
    words,
)
from bench.common import commit, write_results
from bench.hh_collapse_report import markdown
from bench.hh_smollm2 import (
    FULL,
    QUICK,
    base_config,
    classifier_spec,
    judge_models,
    rows_of,
    seed_config,
    split_data,
    subset_of,
    trained_records,
)
from bench.hh_tries import TRIES, tries_folder

SAMPLINGS = {
    "∝ A (paper)": (1.0, False),
    "∝ A in passes": (1.0, True),
    "∝ √A (tempered)": (0.5, False),
    "uniform": (0.0, False),
}
"""Sampling weight A^exponent over the positive-advantage examples, and whether the draw goes
in passes (`sample_in_passes`) instead of with replacement."""


def draws(advantage: np.ndarray, sampling: tuple[float, bool], count: int, seed: int) -> np.ndarray:
    """How often each positive example is drawn in `count` draws of the sampler."""
    exponent, in_passes = sampling
    positive = np.flatnonzero(advantage > 0)
    weights = advantage[positive] ** exponent
    sampler = PrioritySampler(np.arange(len(positive)), weights, count, seed, in_passes=in_passes)
    drawn = np.bincount(list(sampler), minlength=len(positive))
    full = np.zeros(len(advantage), dtype=np.int64)
    full[positive] = drawn
    return full


def draw_spread(counts: np.ndarray, advantage: np.ndarray) -> dict:
    positive = advantage > 0
    drawn = counts[positive]
    order = np.argsort(-advantage[positive])
    top1 = order[: max(1, len(order) // 100)]
    top10 = order[: max(1, len(order) // 10)]
    shares = drawn / drawn.sum()
    return {
        "draws": int(drawn.sum()),
        "positives": int(positive.sum()),
        "unique_drawn": int((drawn > 0).sum()),
        "max_draws_of_one_example": int(drawn.max()),
        "share_of_draws_on_top_1pct": float(drawn[top1].sum() / drawn.sum()),
        "share_of_draws_on_top_10pct": float(drawn[top10].sum() / drawn.sum()),
        "effective_examples": float(1 / np.sum(shares**2)),
    }


def kinds(texts: list[str], mask: np.ndarray) -> dict:
    chosen = [t for t, m in zip(texts, mask, strict=True) if m]
    return {
        "count": len(chosen),
        "evasive_share": float(np.mean([is_evasive(t) for t in chosen])) if chosen else None,
        "short_share": float(np.mean([words(t) < SHORT_MAX_WORDS for t in chosen]))
        if chosen
        else None,
        "mean_words": float(np.mean([words(t) for t in chosen])) if chosen else None,
    }


def top_answers(texts, advantage, subsets, online: bool) -> dict:
    """The kinds of answer among all, the positive and the top 10% by A (with or without
    helpful-online)."""
    keep = (
        np.ones(len(texts), bool) if online else np.array([s != "helpful_online" for s in subsets])
    )
    positive = keep & (advantage > 0)
    threshold = np.quantile(advantage[keep], 0.9)
    top = keep & (advantage >= threshold)
    return {
        "all": kinds(texts, keep),
        "positive": kinds(texts, positive),
        "top_10pct": kinds(texts, top),
        "fraction_positive": float(positive.sum() / keep.sum()),
    }


def gradient_weight(counts: np.ndarray, advantage: np.ndarray) -> np.ndarray:
    """Each example's weight in A-LoL's gradient: its draws, each weighted by A again."""
    return counts * np.clip(advantage, 0, None)


def weight_shares(texts, advantage, counts_by_sampling) -> dict:
    """Share of the gradient weight (draws × A) on the evasive templates, per sampling."""
    evasive = np.array([is_evasive(t) for t in texts])
    shares = {}
    for name, counts in counts_by_sampling.items():
        weight = gradient_weight(counts, advantage)
        shares[name] = float(weight[evasive].sum() / weight.sum())
    return shares


def by_subset(texts, advantage, subsets, counts_by_sampling) -> dict:
    """Where the positive advantage sits, per HH subset: its share of the data, of the top 10%
    by A and of the gradient weight (draws × A) under each sampling, and which kinds of answer
    make up its top 10%."""
    subsets = np.asarray(subsets)
    top = advantage >= np.quantile(advantage, 0.9)
    weights = {
        name: gradient_weight(counts, advantage) for name, counts in counts_by_sampling.items()
    }
    evasive = np.array([is_evasive(t) for t in texts])
    question = np.array([is_clarifying_question(t) for t in texts])
    found = {}
    for subset in dict.fromkeys(subsets.tolist()):
        mine = subsets == subset
        found[subset] = {
            "share_of_data": float(mine.mean()),
            "fraction_positive": float((advantage[mine] > 0).mean()),
            "mean_advantage": float(advantage[mine].mean()),
            "share_of_top_10pct": float((mine & top).sum() / top.sum()),
            "share_of_gradient_weight": {
                name: float(weight[mine].sum() / weight.sum()) for name, weight in weights.items()
            },
            "evasive_share_of_its_top": _mean(evasive[mine & top]),
            "question_share_of_its_top": _mean(question[mine & top]),
            "question_share_of_all": float(question[mine].mean()),
        }
    return found


def recipe_sampling(cfg) -> str:
    """The name in SAMPLINGS of the sampling `cfg` trains with."""
    return "∝ A in passes" if cfg.sample_in_passes else "∝ A (paper)"


def judged_selection(
    cfg, records, advantage: np.ndarray, subsets, counts: np.ndarray, judges: dict
) -> dict:
    """judge → group (all, then each subset) → its mean score of the training answers, of the
    positive ones, of the top 10% by A and weighted by draws × A, and Spearman's ρ with A."""
    tokenizer = load_tokenizer(cfg.model)
    prompts = [render(cfg, r.prompt, tokenizer) for r in records]
    texts = [r.response for r in records]
    subsets = np.asarray(subsets)
    groups = {"all": np.ones(len(texts), bool)}
    groups.update((subset, subsets == subset) for subset in dict.fromkeys(subsets.tolist()))
    weight = gradient_weight(counts, advantage)
    top = advantage >= np.quantile(advantage, 0.9)
    found = {}
    for name, model in judges.items():
        judge_reward = load_reward(classifier_spec(model, name))
        scores = np.array([s["total"] for s in score(judge_reward, prompts, texts)])
        found[name] = {
            group: {
                "all": float(scores[mask].mean()),
                "positive": _mean(scores[mask & (advantage > 0)]),
                "top_10pct": _mean(scores[mask & top]),
                "gradient_weighted": float(np.average(scores[mask], weights=weight[mask]))
                if weight[mask].sum() > 0
                else None,
                "spearman_with_advantage": spearman(advantage[mask], scores[mask]),
            }
            for group, mask in groups.items()
        }
    return found


def value_errors(run_dir: Path) -> dict:
    """R(π_ref's answer) − V(x) on the held-out validation prompts, by answer length; for
    per-prompt values, which have no fit error on the training prompts, their level and
    spread."""
    metrics = json.loads((run_dir / "value" / "value_metrics.json").read_text())
    if metrics.get("estimate") == "per_prompt":
        return metrics
    samples = [json.loads(line) for line in (run_dir / "value" / "value_samples.jsonl").open()]
    rows = [
        (words(samples[i]["response"]), target - prediction)
        for i, target, prediction in zip(
            metrics["heldout_indices"],
            metrics["heldout_targets"],
            metrics["heldout_predictions"],
            strict=True,
        )
    ]
    short = [e for n, e in rows if n < SHORT_MAX_WORDS]
    long = [e for n, e in rows if n >= SHORT_MAX_WORDS]
    return {
        "heldout_prompts": len(rows),
        "mean_error": statistics.fmean(e for _, e in rows),
        "mean_reward_of_reference_answers": statistics.fmean(s["reward"]["total"] for s in samples),
        "mean_error_short_answers": statistics.fmean(short) if short else None,
        "mean_error_long_answers": statistics.fmean(long) if long else None,
        "short_answers": len(short),
        "explained_variance": metrics.get("explained_variance"),
    }


def clip_fractions(run_dir: Path) -> dict:
    found = {}
    for name in ("a_lol", "a_lol_seq"):
        path = run_dir / "train" / name / "metrics.jsonl"
        if path.exists():
            rows = [json.loads(line) for line in path.open()]
            found[name] = [
                (row["step"], row["importance_weight/clip_frac"])
                for row in rows
                if "importance_weight/clip_frac" in row
            ]
    return found


def measured_table(run_dir: Path) -> AdvantageTable:
    """The advantage table the run's advantage stage last wrote its stats of (the folder caches
    one per set of inputs; a try's folder holds its seed's too)."""
    folder = run_dir / "advantage"
    named = json.loads((folder / "advantage_stats.json").read_text()).get("table")
    if named is not None:
        return AdvantageTable.load(folder / named)
    tables = sorted(folder.glob("advantages-*.safetensors"))
    if len(tables) != 1:
        raise SystemExit(
            f"{folder} holds {len(tables)} advantage tables and its stats name none (an alol "
            "before they did): run the advantage stage again there to name its table"
        )
    return AdvantageTable.load(tables[0])


def measure(seed_dir: Path, cfg, nll_steps: int, batch_size: int, seed: int, judges: dict) -> dict:
    records = trained_records(cfg)
    table = joined(records, measured_table(seed_dir))
    texts = [r.response for r in records]
    subsets = [subset_of(r) for r in records]
    advantage = table.advantage
    if cfg.length_neutral_advantage:
        advantage = length_neutral(advantage, response_words(texts))
    steps = budget_steps(nll_steps, float(np.mean(advantage > 0)))
    count = steps * batch_size
    counts = {name: draws(advantage, sampling, count, seed) for name, sampling in SAMPLINGS.items()}
    short = np.array([words(t) < SHORT_MAX_WORDS for t in texts])
    return {
        "a_lol_steps": steps,
        "draws": {name: draw_spread(c, advantage) for name, c in counts.items()},
        "answers_with_online": top_answers(texts, advantage, subsets, online=True),
        "answers_without_online": top_answers(texts, advantage, subsets, online=False),
        "gradient_weight_on_evasive": weight_shares(texts, advantage, counts),
        "by_subset": by_subset(texts, advantage, subsets, counts),
        "mean_advantage": {
            "short_answers": _mean(advantage[short]),
            "long_answers": _mean(advantage[~short]),
            "evasive_answers": _mean(advantage[[is_evasive(t) for t in texts]]),
        },
        "length_neutral_advantage": cfg.length_neutral_advantage,
        "mean_value_on_training_prompts": float(table.value.mean()),
        "value_error": value_errors(seed_dir),
        "clip_fraction": clip_fractions(seed_dir),
        "judged_selection": judged_selection(
            cfg, records, advantage, subsets, counts[recipe_sampling(cfg)], judges
        ),
        "judged_sampling": recipe_sampling(cfg),
    }


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/hh_smollm2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="the quick benchmark's artifacts")
    parser.add_argument(
        "--paper-advantage",
        action="store_true",
        help="measure the paper's A even where the recipe trains on the length-neutral A",
    )
    parser.add_argument(
        "--results", help="name of the results files (hh_collapse, hh_collapse_quick with --quick)"
    )
    parser.add_argument(
        "--try",
        dest="try_name",
        choices=TRIES,
        help="measure this try's run on the seed (`bench.hh_tries`) instead of the seed's own",
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    out = Path(args.out) / ("quick" if args.quick else "judged")
    paths = split_data(out, sizes, quick=args.quick)
    cfg = base_config(out, Path(args.out) / "smollm2", paths, args.quick)
    seed_cfg = seed_config(cfg, args.seed, rows_of(args.seed), out, [])
    run_dir = out / f"seed{args.seed}"
    if args.try_name:
        run_dir = tries_folder(out, args.seed) / args.try_name
        seed_cfg = replace(seed_cfg, **TRIES[args.try_name].overrides)
    if args.paper_advantage:
        seed_cfg = replace(seed_cfg, length_neutral_advantage=False)
    judges = judge_models(cfg, out, paths, sizes)
    result = measure(run_dir, seed_cfg, cfg.max_steps, cfg.batch_size, args.seed, judges)
    result.update(
        commit=commit(),
        batch_size=cfg.batch_size,
        seed=args.seed,
        arguments=sys.argv[1:],
        measured=args.try_name,
    )
    name = args.results or ("hh_collapse_quick" if args.quick else "hh_collapse")
    write_results(name, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
