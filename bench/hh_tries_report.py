"""The table of `bench.hh_tries`: each try's rows on the validation prompts beside π_ref's,
what it changes, and notes on the tries that score with a reward of their own."""

from __future__ import annotations

import json

MEASURES = ("reward", "helpfulness", "harmlessness", "relevance", "safety")


def markdown(result: dict) -> str:
    """The table, tries in the order of their names: the results file keeps them so, and a
    table written during a run then reads as the one written again from the file."""
    by_name = sorted(result["tries"].items())
    header = ["try", "objective", "changed", *MEASURES]
    header += ["distinct-2", "one answer", "words", "reward model's part", "flag", "commit"]
    lines = [
        f"# Recipe tries on the judged HH benchmark, seed {result['seed']}, validation prompts",
        "",
        "`python -m bench.hh_tries` (each row's commit in its last column): each try reuses "
        f"seed {result['seed']}'s π_ref, "
        "V(x) and advantages and changes only the settings named; evaluated, judged and audited "
        "on the 200 validation prompts (never on the test prompts). π_ref's row comes first.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    tries = [found for _, found in by_name]
    shared = next((f for f in tries if scores_with_recipe_reward(f)), tries[0])["rows"]["reference"]
    lines.append(_row("π_ref", "–", "–", shared, "–"))
    for name, found in by_name:
        changed = changes_of(found)
        ran_at = found["commit"] + precision_note(found)
        if not same_measures(found["rows"]["reference"], shared):
            lines.append(_row(f"π_ref of {name}", "–", changed, found["rows"]["reference"], ran_at))
        for objective in found["objectives"]:
            lines.append(_row(name, objective, changed, found["rows"][objective], ran_at))
    lines += [""] + [
        f"- {name} {own_reward(found)}: its rows' reward is in that reward's units, its π_ref "
        f"row too. {constants_paid(found)}"
        for name, found in by_name
        if "reward_model" in found or found.get("gated")
    ]
    term, judge = result["harmless_term"], result["harmlessness_judge"]
    lines.append(
        "- Harmless-base's training pairs halved by prompt: the training reward's harmlessness "
        f"term (weight {term['weight']:g} unless a try changes it) is Bradley–Terry on "
        f"{_fit(term)}; the harmlessness judge on {_fit(judge)}."
    )
    return "\n".join(lines).rstrip("\n") + "\n"


def scores_with_recipe_reward(found: dict) -> bool:
    """Whether a try's reward column is in the recipe's units (its own reward model or another
    weight or a gate of the harmlessness term scores π_ref otherwise)."""
    return (
        "reward_model" not in found
        and not found.get("gated")
        and found.get("harmless_term") == found.get("recipe_harmless_term")
    )


def own_reward(found: dict) -> str:
    """What a try's own reward is: its own reward model, or the harmlessness term gated."""
    if "reward_model" in found:
        return (
            "scores with its own reward model (held-out pairwise accuracy "
            f"{found['reward_model']['pairwise_accuracy']:.3f}, off-prompt accuracy "
            f"{found['reward_model']['off_prompt_accuracy']:.3f}){_term_of(found)}"
        )
    return (
        "counts the harmlessness term in proportion to a classifier's probability that the "
        "prompt is a red-team request (MiniLM on the train split's prompts, labelled by "
        f"subset; {_gate_fit(found['request_gate'])})"
    )


def _term_of(found: dict) -> str:
    weight = found.get("harmless_term")
    return f" plus {weight:g} × the harmlessness term" if weight else ""


def _gate_fit(metrics: dict) -> str:
    return (
        f"held-out accuracy {metrics['accuracy']:.3f} with {metrics['positive_share']:.0%} "
        f"red-team prompts, balanced accuracy {metrics['balanced_accuracy']:.3f}"
    )


def _fit(half: dict) -> str:
    return (
        f"{half['pairs']} pairs (held-out accuracy {half['heldout']['pairwise_accuracy']:.3f}; it "
        f"prefers the human's choice on {half['test_prefers_human_choice']:.0%} of "
        f"{half['test_pairs']} test pairs)"
    )


def changes_of(found: dict) -> str:
    """The settings a try changes, its harmlessness term's weight among them (tries that ran
    before the recipe had the term name no recipe weight: 0)."""
    changes = {**found["overrides"]}
    if found.get("harmless_term", 0.0) != found.get("recipe_harmless_term", 0.0):
        changes["harmless_term"] = found["harmless_term"]
    if found.get("gated"):
        changes["harmless_term_on"] = "red-team requests"
    return json.dumps(changes) if changes else "–"


def same_measures(row: dict, other: dict) -> bool:
    """Whether two rows agree on every figure both hold (rows from before a judge was added
    lack its column)."""
    return all(row[key] == other[key] for key in row.keys() & other.keys())


def constants_paid(found: dict) -> str:
    """How many of the audit's constant answers, each given to every validation prompt, the
    try's reward pays above π_ref's own answers."""
    reference = found["rows"]["reference"]["reward"]
    constants = found.get("constants", [])
    above = [c for c in constants if c["reward"] > reference]
    best = max(constants, key=lambda c: c["reward"], default=None)
    if best is None:
        return ""
    return (
        f"{len(above)} of the audit's {len(constants)} constant answers score above π_ref "
        f"({reference:.3f}); the highest, “{best['text']}”, {best['reward']:.3f}."
    )


def precision_note(found: dict) -> str:
    """Beside the commit, a try that trained in float32 where the recipe asks for bf16 (a CPU
    without native bf16); tries from before this was kept ran in bf16 autocast."""
    precision = found.get("training_precision", "bf16 autocast")
    return "" if precision == "bf16 autocast" else ", float32"


def _row(name: str, objective: str, changed: str, row: dict, ran_at: str) -> str:
    cells = [name, objective, changed, *(f"{row.get(m, float('nan')):.3f}" for m in MEASURES)]
    cells += [f"{row['distinct_2']:.3f}", f"{row['template_share']:.0%}"]
    part = row.get("reward_model_part")  # rows from before it was kept have none
    cells += [f"{row['length_words']:.1f}", "–" if part is None else f"{part:.3f}"]
    cells += [row.get("flag") or "–", ran_at]
    return "| " + " | ".join(cells) + " |"
