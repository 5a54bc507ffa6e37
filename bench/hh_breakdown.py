"""The judged HH benchmark's figures taken apart: where A-LoL's weight goes and where the
judges move, by HH subset, and how much of each change is the answers' length. The
measurements behind its harmlessness fall, from every seed's artifacts.

    python -m bench.hh_breakdown             # after `python -m bench.hh_smollm2`

- The gradient weight: each training answer counts ∝ (its draws) × A, so ∝ A² when A-LoL
  draws ∝ A (the paper's sampling) and ∝ A under uniform draws. Its share per subset, beside
  the subset's share of the training answers (what π_ref's SFT and NLL weigh it by) and of the
  test prompts.
- The test means of the reward and of each judge per subset, for every model evaluated, over
  the seeds that evaluated it.
- Each model's change from π_ref on the reward and each judge, as measured and at equal
  answer length (`alol.reports.metrics.length_controlled_change`, what alol's audit reports),
  per seed.

No model is loaded: the advantage tables and the scores are read as the benchmark wrote them.
Writes bench/results/hh_breakdown.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from alol.data.formats import load_records
from alol.fingerprint import record_hashes
from alol.reports.advantage_report import group_shares
from alol.reports.metrics import length_controlled_change
from bench.common import commit, write_results
from bench.hh_smollm2 import FULL, base_config, split_data, subset_of, trained_records

MEASURES = ("reward", "judge-helpfulness", "judge-harmlessness", "judge-relevance")
MODELS = ("reference", "nll", "wbc", "kto", "dpo", "a_lol", "a_lol_seq", "a_lol_ref_free")
SHARES = {
    "training answers": "answers",
    "∝ A draws (the paper's): ∝ A²": "gradient_weight",
    "uniform draws: ∝ A": "draws",
}
"""Row of the table → `alol.reports.advantage_report.group_shares`' figure: the gradient weight
is draws × A, so ∝ A² under the paper's draws and ∝ A under uniform ones (the draw share ∝ A)."""


def positive_advantages(seed_dir: Path, records: list) -> np.ndarray:
    """max(A, 0) per training answer, in the records' order. A table that names its records
    is checked against them; the seeds run at a65e7c6 predate those names and hold their rows
    in the records' order, which only their count can confirm."""
    arrays = load_file(next((seed_dir / "advantage").glob("advantages-*.safetensors")))
    if len(arrays["advantage"]) != len(records):
        raise ValueError(f"{seed_dir}: {len(arrays['advantage'])} rows for {len(records)} records")
    if "record_hashes" in arrays and not np.array_equal(
        arrays["record_hashes"], record_hashes(records)
    ):
        raise ValueError(f"{seed_dir}: the advantage table was computed from other records")
    return np.clip(arrays["advantage"], 0, None)


def weight_by_subset(positive: np.ndarray, subsets: np.ndarray) -> dict:
    """Each sampling's share of the gradient weight per subset, and the share of answers."""
    shares = group_shares(positive, subsets.tolist())
    return {row: {s: found[key] for s, found in shares.items()} for row, key in SHARES.items()}


def scores_of(eval_dir: Path, measure: str) -> np.ndarray | None:
    files = list((eval_dir / "scores").glob(f"{measure}-*.json"))
    if not files:
        return None
    if len(files) > 1:
        raise ValueError(
            f"{eval_dir}: {len(files)} score files for {measure}; keep the current one"
        )
    return np.array([row["total"] for row in json.loads(files[0].read_text())])


def test_means(out: Path, seeds: list[int], test_subsets: np.ndarray) -> dict:
    """model → measure → subset → {mean over seeds, seeds}."""
    found: dict = {}
    for model in MODELS:
        for measure in MEASURES:
            per_subset: dict[str, list[float]] = {}
            for seed in seeds:
                scores = scores_of(out / f"seed{seed}" / "eval" / model, measure)
                if scores is None or len(scores) != len(test_subsets):
                    continue
                for subset in sorted(set(test_subsets)):
                    per_subset.setdefault(subset, []).append(
                        float(scores[test_subsets == subset].mean())
                    )
            if per_subset:
                found.setdefault(model, {})[measure] = {
                    subset: {"mean": statistics.fmean(values), "seeds": len(values)}
                    for subset, values in per_subset.items()
                }
    return found


def answer_words(eval_dir: Path) -> list[int]:
    with (eval_dir / "answers.jsonl").open(encoding="utf-8") as lines:
        return [len(json.loads(line)["response"].split()) for line in lines]


def changes_at_equal_length(out: Path, seeds: list[int]) -> dict:
    """model → measure → per seed {seed, change, at_equal_length, standard_error, per_doubling}."""
    found: dict = {}
    for seed in seeds:
        evals = out / f"seed{seed}" / "eval"
        reference_words = answer_words(evals / "reference")
        reference = {measure: scores_of(evals / "reference", measure) for measure in MEASURES}
        for model in MODELS[1:]:
            if not (evals / model / "answers.jsonl").exists():
                continue
            words = answer_words(evals / model)
            for measure in MEASURES:
                model_scores = scores_of(evals / model, measure)
                reference_scores = reference[measure]
                if model_scores is None or reference_scores is None:
                    continue
                fit = length_controlled_change(
                    model_scores, reference_scores, words, reference_words
                )
                found.setdefault(model, {}).setdefault(measure, []).append(
                    {
                        "seed": seed,
                        "change": float(np.mean(model_scores - reference_scores)),
                        "at_equal_length": fit.change,
                        "standard_error": fit.standard_error,
                        "per_doubling": fit.per_doubling,
                    }
                )
    return found


def markdown(result: dict) -> str:
    subsets = sorted(result["test_prompts"])
    lines = [
        "# The judged HH benchmark taken apart: by subset and at equal answer length",
        "",
        f"`python -m bench.hh_breakdown` at commit {result['commit']}, on the judged HH "
        "benchmark's artifacts (seeds " + ", ".join(map(str, result["seeds"])) + ").",
        "",
        "## A-LoL's gradient weight per subset (mean over the seeds)",
        "",
        "| weight | " + " | ".join(subsets) + " |",
        "|---|" + "---|" * len(subsets),
        "| test prompts | "
        + " | ".join(f"{result['test_prompts'][s]:.0%}" for s in subsets)
        + " |",
    ]
    for name, shares in result["gradient_weight"].items():
        lines.append(f"| {name} | " + " | ".join(f"{shares[s]:.0%}" for s in subsets) + " |")
    for measure in MEASURES:
        lines += ["", f"## {measure.removeprefix('judge-')} on the test prompts, per subset", ""]
        lines += [
            "| model | seeds | " + " | ".join(subsets) + " |",
            "|---|---|" + "---|" * len(subsets),
        ]
        for model, measures in result["test_means"].items():
            if measure in measures:
                cells = measures[measure]
                seeds = max(cell["seeds"] for cell in cells.values())
                values = " | ".join(f"{cells[s]['mean']:.3f}" for s in subsets)
                lines.append(f"| {model} | {seeds} | {values} |")
    lines += [
        "",
        "## Change from π_ref, as measured and at equal answer length",
        "",
        "Per seed: the mean per-prompt change, then the change at equal length ± its standard "
        "error (the intercept of the change regressed on log2 of the answers' length ratio), "
        "then the slope per doubling of length.",
        "",
        "| model | measure | seed: change → at equal length ± se (per doubling) |",
        "|---|---|---|",
    ]
    for model, measures in result["at_equal_length"].items():
        for measure, fits in measures.items():
            cells = "; ".join(
                f"{f['seed']}: {f['change']:+.3f} → {f['at_equal_length']:+.3f} ± "
                f"{f['standard_error']:.3f} ({f['per_doubling']:+.3f})"
                for f in fits
            )
            lines.append(f"| {model} | {measure.removeprefix('judge-')} | {cells} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/hh_smollm2")
    args = parser.parse_args()
    out = Path(args.out) / "judged"
    paths = split_data(out, FULL, quick=False)
    cfg = base_config(out, Path(args.out) / "smollm2", paths, quick=False)
    records = trained_records(cfg)
    subsets = np.array([subset_of(record) for record in records])
    seeds = sorted(int(d.name.removeprefix("seed")) for d in out.glob("seed[0-9]*"))
    per_seed = [
        weight_by_subset(positive_advantages(out / f"seed{s}", records), subsets) for s in seeds
    ]
    weight = {
        name: {
            s: statistics.fmean(shares[name][s] for shares in per_seed) for s in per_seed[0][name]
        }
        for name in per_seed[0]
    }
    test_subsets = np.array([subset_of(r) for r in load_records(paths["test"]).records])
    result = {
        "commit": commit(),
        "seeds": seeds,
        "gradient_weight": weight,
        "gradient_weight_per_seed": per_seed,
        "test_prompts": {s: float(np.mean(test_subsets == s)) for s in sorted(set(test_subsets))},
        "test_means": test_means(out, seeds, test_subsets),
        "at_equal_length": changes_at_equal_length(out, seeds),
    }
    write_results("hh_breakdown", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
