"""The HH recipe tries over seeds: each try's change from its own seed's π_ref, mean ± sd over
the seeds that ran it, so that a try goes into the recipe on what holds across seeds rather
than on one seed's figures (a seed's change is often within another seed's spread).

    python -m bench.hh_tries_seeds hh_tries_lora_s0 hh_tries_lora_s1 hh_tries_lora_s2 \\
        --results hh_tries_lora_seeds      # -> bench/results/hh_tries_lora_seeds.{json,md}

Each argument names a results file of `bench.hh_tries` (one seed each). Changes are taken
within a seed's file, against the π_ref row of the same try: a file's rows are measured by its
run's reward model and judges, which a run on another machine or precision fits again (each
row names its commit and precision), so across such files the changes compare in direction
and rough size, not to the third decimal. A try that scores with a reward of its own gives its
reward change in that reward's units.
"""

from __future__ import annotations

import argparse
import json
import sys

from bench.common import RESULTS, commit, mean_and_sd, plus_minus, write_results

CHANGES = ("reward", "helpfulness", "harmlessness", "relevance", "distinct_2", "length_words")
"""The measures whose change from π_ref the table shows."""
LABELS = {"distinct_2": "distinct-2", "length_words": "words"}


def changes_by_row(result: dict) -> dict[tuple[str, str], dict]:
    """(try, objective) → its changes from the try's π_ref row on this seed, and its flag."""
    rows = {}
    for name, found in result["tries"].items():
        reference = found["rows"]["reference"]
        for objective in found["objectives"]:
            trained = found["rows"][objective]
            changes = {m: trained[m] - reference[m] for m in CHANGES if m in trained}
            rows[name, objective] = {"changes": changes, "flag": trained.get("flag")}
    return rows


def across_seeds(results: list[dict]) -> list[dict]:
    """Each (try, objective) that some seed ran: the seeds, and per measure the mean and sample
    sd of its change over them (sd None on one seed), and the seeds whose audit flagged it."""
    by_seed = {result["seed"]: changes_by_row(result) for result in results}
    keys = sorted({key for rows in by_seed.values() for key in rows})
    summary = []
    for name, objective in keys:
        ran = {
            seed: rows[name, objective]
            for seed, rows in by_seed.items()
            if (name, objective) in rows
        }
        measures = {}
        for measure in CHANGES:
            values = [row["changes"][measure] for row in ran.values() if measure in row["changes"]]
            if values:
                measures[measure] = spread(values)
        flagged = sorted(seed for seed, row in ran.items() if row["flag"])
        summary.append(
            {
                "try": name,
                "objective": objective,
                "seeds": sorted(ran),
                "changes": measures,
                "flagged": flagged,
            }
        )
    return summary


def spread(values: list[float]) -> dict:
    mean, sd = mean_and_sd(values)
    return {"mean": mean, "sd": sd}


def markdown(summary: list[dict], names: list[str]) -> str:
    labels = [f"Δ {LABELS.get(m, m)}" for m in CHANGES]
    header = ["try", "objective", "seeds", *labels, "flagged on"]
    lines = [
        "# The HH recipe tries over seeds, validation prompts",
        "",
        f"`python -m bench.hh_tries_seeds {' '.join(names)}`: each try's change from its own "
        "seed's π_ref on the 200 validation prompts, mean ± sd over the seeds that ran it "
        "(one seed: no sd), each seed measured by its own run's reward model and judges "
        "(its results file names them).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in summary:
        cells = [row["try"], row["objective"], ", ".join(map(str, row["seeds"]))]
        cells += [_change(row["changes"].get(m), m) for m in CHANGES]
        cells.append(", ".join(map(str, row["flagged"])) or "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _change(change: dict | None, measure: str) -> str:
    if change is None:
        return "–"
    spec = "+.1f" if measure == "length_words" else "+.3f"
    return plus_minus(change["mean"], change["sd"], spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="+", help="results files of bench.hh_tries (no suffix)")
    parser.add_argument("--results", default="hh_tries_seeds", help="the name to write")
    args = parser.parse_args()
    results = [json.loads((RESULTS / f"{name}.json").read_text()) for name in args.names]
    seeds = [result["seed"] for result in results]
    if len(set(seeds)) != len(seeds):
        parser.error(f"each file must hold another seed; these hold seeds {seeds}")
    summary = across_seeds(results)
    result = {"commit": commit(), "files": args.names, "tries": summary}
    write_results(args.results, result, markdown(summary, args.names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
