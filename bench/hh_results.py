"""The judged HH benchmark's results across seeds and parts: each model's mean and spread
over seeds, the targets, the markdown table, the picture of each model's reward change against
its judges', and how a part run elsewhere (a run folder that is gone) merges with this run's,
refused unless both share the split, reward model and judges.

`python -m bench.hh_results bench/results/<name>.json` writes the table and the picture again
from a results file, with this commit's targets (say, for a file a fixed older commit wrote)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from alol.reports.metrics import formatted
from alol.reports.plots import plot_reward_against_judges
from bench.common import mean_and_sd, plus_minus, write_results
from bench.hh_targets import targets, targets_markdown


def summary(seeds: dict[int, dict], data: dict | None = None) -> dict:
    """The results' fields that follow from each seed's finished models and their times (and
    `data`, the data's own test answers scored, which the targets quote)."""
    return {
        "seeds": sorted(seeds),
        "stage_hours": sum(sum(filter(None, run["times"].values())) for run in seeds.values())
        / 3600,
        "not_timed": {
            seed: sorted(name for name, took in run["times"].items() if took is None)
            for seed, run in seeds.items()
            if None in run["times"].values()
        },
        "table": aggregate(seeds),
        "targets": targets(seeds, data),
        "per_seed": seeds,
    }


def shared_setup(result: dict) -> dict:
    """What two parts of one benchmark must share, as JSON reads it back: rows trained from
    another split, reward model or judge are not rows of the same table (where a part's run
    folder lay is not part of it)."""
    judges = {
        name: {k: v for k, v in j.items() if k != "path"} for name, j in result["judges"].items()
    }
    setup = {key: result[key] for key in ("commit", "sizes", "reward_model")}
    return json.loads(json.dumps({**setup, "judges": judges}))


def read_results(path: Path, named_by: str = "--merge-with") -> dict:
    """A results file (an earlier part's, named by --merge-with), or a stop that names it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"{named_by} {path}: not a readable results file ({err})") from None


def refuse_another_setup(previous: dict, current: dict, previous_path: Path) -> None:
    """Stop unless `previous` (an earlier part's results) shares `current`'s setup. `current`
    needs only the setup's keys, so a run checks this as soon as its reward model and judges
    are fitted, not after hours of training whose results it could then not write."""
    theirs, ours = shared_setup(previous), shared_setup(current)
    for key, value in ours.items():
        if theirs[key] != value:
            raise SystemExit(
                f"{previous_path}: its {key!r} is {json.dumps(theirs[key])[:300]}, this run's is "
                f"{json.dumps(value)[:300]}; only parts of one benchmark merge"
            )


def merge_results(previous: dict, current: dict, previous_path: Path) -> dict:
    """`current` with the models of `previous` (an earlier part of the same benchmark, say run on
    another machine whose run folder is gone) that `current`'s run folder lacks; where both hold
    a model, the current run's row wins, and a stage's wall time is kept from whichever run
    timed it whole."""
    refuse_another_setup(previous, current, previous_path)
    seeds = {int(seed): run for seed, run in previous["per_seed"].items()}
    for seed, run in current["per_seed"].items():
        earlier = seeds.get(int(seed), {"rows": {}, "times": {}})
        times = {**earlier["times"], **{k: v for k, v in run["times"].items() if v is not None}}
        times.update({k: None for k, v in run["times"].items() if v is None and k not in times})
        seeds[int(seed)] = {
            "rows": {**earlier["rows"], **run["rows"]},
            "times": times,
            "judge_warnings": run.get("judge_warnings", earlier.get("judge_warnings", [])),
            "reward_flags": run.get("reward_flags", earlier.get("reward_flags", [])),
        }
    return {**current, **summary(dict(sorted(seeds.items())), current.get("data"))}


def seed_changes(per_seed: dict) -> dict[str, dict[str, tuple[float, float]]]:
    """Per trained model: its change from the same seed's π_ref on the reward and on every
    judge (each measure with a win-rate beside it), mean and standard error over its seeds."""
    changes: dict[str, dict[str, list[float]]] = {}
    for run in per_seed.values():
        reference = run["rows"]["reference"]
        for name, row in run["rows"].items():
            if name == "reference":
                continue
            measures = [key.removesuffix("_win_rate") for key in row if key.endswith("_win_rate")]
            for measure in ["reward", *measures]:
                delta = row[measure] - reference[measure]
                changes.setdefault(name, {}).setdefault(measure, []).append(delta)
    return {
        name: {measure: _mean_and_se(deltas) for measure, deltas in measures.items()}
        for name, measures in changes.items()
    }


def _mean_and_se(values: list[float]) -> tuple[float, float]:
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return statistics.fmean(values), se


def plot(result: dict, png_path: Path) -> Path | None:
    """Each model's reward change against each judge's, over seeds; red if flagged on any
    (None when no model has trained yet)."""
    changes = seed_changes(result["per_seed"])
    if not changes:
        return None
    runs = result["per_seed"].values()
    flagged = {name for run in runs for name, row in run["rows"].items() if row.get("flag")}
    seeds = {name: sum(name in run["rows"] for run in runs) for name in changes}
    labels = {name: name if seeds[name] > 1 else f"{name} (1 seed)" for name in changes}
    return plot_reward_against_judges(
        {labels[name]: change for name, change in changes.items()},
        {labels[name] for name in flagged if name in labels},
        png_path,
        title="change from the same seed's π_ref on the test prompts, mean over seeds "
        "± 2 s.e.; red: flagged by the audit on some seed",
    )


ROW_ORDER = (
    "reference", "nll", "wbc", "r_gold", "r_lol", "a_lol", "a_lol_ref_free", "a_lol_seq",
    "a_lol_kl", "dpo", "pro", "kto", "grpo", "rloo",
)  # fmt: skip
"""The table's rows: π_ref, the likelihood baselines, the A-LoL variants, the preference and
online baselines; JSON keeps rows sorted by name, so a merged or rewritten table restores it."""


def in_row_order(names) -> list[str]:
    """`names` in ROW_ORDER, any other name after them in the order given."""
    names = list(dict.fromkeys(names))
    return sorted(names, key=lambda n: ROW_ORDER.index(n) if n in ROW_ORDER else len(ROW_ORDER))


def aggregate(seeds: dict[int, dict]) -> dict[str, dict]:
    """Per model (in ROW_ORDER): each numeric measure's mean, sample sd across seeds (None for
    one seed) and values."""
    names = in_row_order(name for run in seeds.values() for name in run["rows"])
    table = {}
    for name in names:
        runs = [run["rows"][name] for run in seeds.values() if name in run["rows"]]
        measures = {}
        for key in runs[0]:
            values = [run[key] for run in runs if isinstance(run.get(key), int | float)]
            if values:
                mean, sd = mean_and_sd(values)
                measures[key] = {"mean": mean, "sd": sd, "values": values}
        times = [run["times"][name] for run in seeds.values() if run["times"].get(name)]
        if times:
            mean, sd = mean_and_sd(times)
            measures["train_seconds"] = {"mean": mean, "sd": sd, "values": times}
        table[name] = measures
    return table


COLUMNS = [
    ("reward", ".3f"), ("helpfulness", ".3f"), ("harmlessness", ".3f"), ("relevance", ".3f"),
    ("safety", ".3f"), ("distinct_2", ".3f"), ("template_share", ".0%"), ("length_words", ".1f"),
    ("cut_off_share", ".0%"), ("log_ratio", ".1f"), ("train_seconds", ".0f"),
]  # fmt: skip


def markdown(result: dict) -> str:
    header = ["model", "seeds", *(name for name, _ in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, measures in result["table"].items():
        cells = [
            name if name != "reference" else "π_ref (SFT)",
            str(len(measures["reward"]["values"])),
        ]
        for key, spec in COLUMNS:
            m = measures.get(key)
            cells.append("–" if m is None else plus_minus(m["mean"], m["sd"], spec))
        lines.append("| " + " | ".join(cells) + " |")
    rm = result["reward_model"]
    judges = [
        f"{name} (Bradley–Terry on the human choices of {_pairs_of(j)}): held-out "
        f"pairwise accuracy {j['heldout'].get('pairwise_accuracy', float('nan')):.3f}, "
        f"off-prompt accuracy {formatted(j['heldout'].get('off_prompt_accuracy'), '.3f')}, "
        f"prefers the human's answer on {j['test_prefers_human_choice']:.1%} of {j['test_pairs']} test pairs"
        for name, j in result["judges"].items()
    ]
    per_seed = [
        f"- seed {seed}: reward "
        + ", ".join(
            f"{name} {run['rows'][name]['reward']:.3f}" for name in in_row_order(run["rows"])
        )
        + f"; trained at {_trained_at(run['rows'])}"
        for seed, run in result["per_seed"].items()
    ]
    flags = [
        f"- seed {seed}: {row['flag']}"
        for seed, run in result["per_seed"].items()
        for row in run["rows"].values()
        if row.get("flag")
    ] or ["- none"]
    reward_flags = [
        f"- seed {seed}: {flag}"
        for seed, run in result["per_seed"].items()
        for flag in run.get("reward_flags", [])
    ] or ["- none"]
    judge_warnings = [
        f"- seed {seed}: {warning}"
        for seed, run in result["per_seed"].items()
        for warning in run.get("judge_warnings", [])
    ] or ["- none"]
    return "\n".join(
        [
            "# HH on SmolLM2-135M-Instruct (CPU scale), judged",
            "",
            f"`python -m bench.hh_smollm2`, last run at commit {result['commit']} (the commit "
            f'that trained each seed\'s rows is under "Reward per seed") — {result["machine"]}; '
            f"torch {result['versions']['torch']}, transformers {result['versions']['transformers']}, "
            f"alol {result['versions']['alol']}; {result['stage_hours']:.1f} h of stage compute in "
            f"all (each stage timed by the run that did it; this run {result['hours']:.1f} h). "
            f"Sizes: {json.dumps(result['sizes'])}.",
            "",
            "Reward model (MiniLM, regression on the train split's stored logits): held-out "
            f"pairwise accuracy {rm['heldout'].get('pairwise_accuracy', float('nan')):.3f}, "
            f"Pearson {rm['heldout'].get('pearson', float('nan')):.3f}, off-prompt accuracy "
            f"{formatted(rm['heldout'].get('off_prompt_accuracy'), '.3f')}; on the test split it orders "
            f"{rm['test_pairwise_accuracy_vs_stored']:.1%} of the pairs as the stored reward model "
            f"does and prefers the human-chosen answer {rm['test_prefers_human_choice']:.1%} of the time.",
            *_harmless_term(rm.get("harmless_term")),
            "",
            "Judges (never trained on, fitted on the train split only):",
            "",
            *(f"- {line}" for line in judges),
            "- relevance: MiniLM cosine of the answer and the user's last question; safety: 1 − "
            "profanity probability (alol's offline scorers)",
            "",
            "Test prompts, greedy decoding; mean ± sample sd over seeds; each objective's kept "
            "checkpoint chosen on the validation prompts by the reward, never a degenerate one "
            "(collapsed, or rambling or looping more than π_ref's validation answers)."
            + _not_timed_note(result["not_timed"]),
            "",
            *lines,
            "",
            "Reward per seed:",
            "",
            *per_seed,
            "",
            *targets_markdown(result),
            "",
            "Audit flags (each seed's `eval/audit.md`):",
            "",
            *flags,
            "",
            "The reward's own flags (each seed's audit; a reward that pays a constant answer "
            "above π_ref's can be raised by giving it, whether or not a model did):",
            "",
            *reward_flags,
            "",
            "Judges whose figures weigh less (each seed's audit):",
            "",
            *judge_warnings,
            "",
            f"Instruct model without SFT: {json.dumps({k: round(v, 3) for k, v in result['instruct'].items() if isinstance(v, float)})}",
            "",
            *_data_line(result),
        ]
    )


def _data_line(result: dict) -> list[str]:
    """The data's human-chosen answers to the test prompts, scored like the models (results
    from before the row existed have none)."""
    if "data" not in result:
        return []
    scores = {k: round(v, 3) for k, v in result["data"].items()}
    return [
        "The data's human-chosen answers to the test prompts (what imitating the data would "
        f"reach): {json.dumps(scores)}",
        "",
    ]


def _pairs_of(judge: dict) -> str:
    """Which human choices a judge learned from (the count where the results name it)."""
    subsets = ", ".join(judge["subsets"])
    return f"{judge['pairs']} pairs of {subsets}" if "pairs" in judge else subsets


def _harmless_term(term: dict | None) -> list[str]:
    """The training reward's harmlessness term, where it has one."""
    if not term:
        return []
    if not term["weight"]:
        return ["", "Training reward: that reward model alone, as in the paper."]
    return [
        "",
        f"Training reward: that reward model plus {term['weight']:g} × a harmlessness term, "
        f"Bradley–Terry on {term['pairs']} human choices of half of harmless_base's training "
        "prompts, the harmlessness judge learning from the other half (held-out pairwise "
        f"accuracy {term['heldout']['pairwise_accuracy']:.3f}; "
        f"prefers the human's answer on {term['test_prefers_human_choice']:.1%} of "
        f"{term['test_pairs']} test pairs); the reward column is that sum.",
    ]


def _trained_at(rows: dict[str, dict]) -> str:
    """Which commit trained which rows of a seed (π_ref's is its SFT's): a benchmark run in
    parts may span commits, and a row's figures are its commit's."""
    by_commit: dict[str, list[str]] = {}
    for name, row in rows.items():
        by_commit.setdefault(row.get("commit") or "an unrecorded commit", []).append(name)
    if len(by_commit) == 1:
        return next(iter(by_commit))
    return "; ".join(f"{commit} ({', '.join(names)})" for commit, names in by_commit.items())


def _not_timed_note(not_timed: dict) -> str:
    if not not_timed:
        return ""
    runs = "; ".join(f"seed {seed}: {', '.join(names)}" for seed, names in not_timed.items())
    return (
        " train_seconds leaves out the runs that resumed a stopped run's checkpoint, "
        f"which were timed only in part ({runs})."
    )


def rewrite(path: Path) -> None:
    """The table (with this commit's targets) and the picture again from a results file."""
    result = read_results(path, named_by="bench.hh_results:")
    seeds = {int(seed): run for seed, run in result["per_seed"].items()}
    result = {**result, **summary(seeds, result.get("data"))}
    write_results(path.stem, result, markdown(result), folder=path.parent)
    plot(result, path.with_suffix(".png"))


def main() -> int:
    parser = argparse.ArgumentParser(description=rewrite.__doc__)
    parser.add_argument("results", type=Path, help="a results file of bench.hh_smollm2")
    rewrite(parser.parse_args().results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
