"""The tables of `bench.hh_collapse`: how A-LoL's draws spread, what the top-advantage
answers are, where the advantage sits by subset, the A² weighting, and V."""

from __future__ import annotations

from bench.answer_kinds import QUESTION_MAX_WORDS


def markdown(result: dict) -> str:
    lines = [
        f"# Why A-LoL turns evasive on HH: measurements of {measured(result)}",
        "",
        f"`python -m bench.hh_collapse {' '.join(result['arguments'])}` at commit "
        f"{result['commit']}, on the judged HH benchmark's {measured(result)} (π_ref, V and "
        f"the advantages). Every figure is of the {advantage_name(result)}; A-LoL trains "
        f"{result['a_lol_steps']} steps × {result['batch_size']} draws.",
        "",
        "## Draws over the positive-advantage examples",
        "",
        "| sampling | positives | drawn at least once | most draws of one | draws on top 1% | on top 10% | effective examples |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, d in result["draws"].items():
        lines.append(
            f"| {name} | {d['positives']} | {d['unique_drawn']} | {d['max_draws_of_one_example']} "
            f"| {d['share_of_draws_on_top_1pct']:.0%} | {d['share_of_draws_on_top_10pct']:.0%} "
            f"| {d['effective_examples']:.0f} |"
        )
    lines += [
        "",
        "## What the top-advantage answers are",
        "",
        "| data | answers | A > 0 | evasive: all / positive / top 10% | short (< 8 words): all / positive / top 10% | words: all / top 10% |",
        "|---|---|---|---|---|---|",
    ]
    for label, key in (
        ("with helpful-online", "answers_with_online"),
        ("without", "answers_without_online"),
    ):
        a = result[key]
        lines.append(
            f"| {label} | {a['all']['count']} | {a['fraction_positive']:.0%} | "
            f"{a['all']['evasive_share']:.1%} / {a['positive']['evasive_share']:.1%} / "
            f"{a['top_10pct']['evasive_share']:.1%} | {a['all']['short_share']:.0%} / "
            f"{a['positive']['short_share']:.0%} / {a['top_10pct']['short_share']:.0%} | "
            f"{a['all']['mean_words']:.0f} / {a['top_10pct']['mean_words']:.0f} |"
        )
    lines += [
        "",
        "## Where the advantage sits, by subset",
        "",
        "Gradient weight: the subset's share of draws × A, for each sampling ("
        + " / ".join(result["draws"])
        + f"). A clarifying question: at most {QUESTION_MAX_WORDS} words, ending with a "
        "question mark.",
        "",
        "| subset | data | A > 0 | mean A | top 10% by A | gradient weight | its top 10%: evasive / clarifying questions | clarifying questions in all its answers |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for subset, b in result["by_subset"].items():
        weight = " / ".join(f"{share:.0%}" for share in b["share_of_gradient_weight"].values())
        lines.append(
            f"| {subset} | {b['share_of_data']:.0%} | {b['fraction_positive']:.0%} | "
            f"{b['mean_advantage']:+.3f} | {b['share_of_top_10pct']:.0%} | "
            f"{weight} | {_share(b['evasive_share_of_its_top'])} / "
            f"{_share(b['question_share_of_its_top'])} | {b['question_share_of_all']:.0%} |"
        )
    weight = result["gradient_weight_on_evasive"]
    lines += [
        "",
        "## The A² weighting",
        "",
        "Share of the gradient weight (draws × A) on evasive templates: "
        + ", ".join(f"{name} {share:.1%}" for name, share in weight.items())
        + ".",
        "",
        *value_lines(result),
    ]
    lines += judged_lines(result)
    logged = {name: points for name, points in result["clip_fraction"].items() if points}
    if logged:
        lines += ["## Importance-weight clip fraction (trained runs)", ""]
        for name, points in logged.items():
            lines.append(f"- {name}: " + ", ".join(f"step {s}: {f:.0%}" for s, f in points))
        lines.append("")
    return "\n".join(lines)


def judged_lines(result: dict) -> list[str]:
    """The learned judges' mean score of the training answers the reward selects (results
    measured before the judges were added have none)."""
    judged = result.get("judged_selection")
    if not judged:
        return []
    lines = [
        "## What the judges say of the answers the reward selects",
        "",
        "Each learned judge's mean score of the training answers: all of them, the positive ones, "
        f"the top 10% by A, weighted by draws × A under the recipe's sampling "
        f"({result['judged_sampling']}); ρ: Spearman's rank correlation of A with the judge.",
        "",
        "| judge | answers | all | A > 0 | top 10% | draws × A | ρ |",
        "|---|---|---|---|---|---|---|",
    ]
    for judge, groups in judged.items():
        for group, m in groups.items():
            lines.append(
                f"| {judge} | {group} | {m['all']:.3f} | {_plain(m['positive'])} | "
                f"{_plain(m['top_10pct'])} | {_plain(m['gradient_weighted'])} | "
                f"{m['spearman_with_advantage']:+.2f} |"
            )
    return [*lines, ""]


def value_lines(result: dict) -> list[str]:
    """The advantage by answer length, and V's error where V was fitted (a head) or its level
    and spread where it is π_ref's own reward per training prompt."""
    advantage, value = result["mean_advantage"], result["value_error"]
    by_length = (
        f"Mean A: short answers {_signed(advantage['short_answers'])}, long "
        f"{_signed(advantage['long_answers'])}, evasive {_signed(advantage['evasive_answers'])}."
    )
    if value.get("estimate") == "per_prompt":
        return [
            "## V and the advantage by answer length",
            "",
            f"{by_length} V(x) is the mean reward of π_ref's {value['samples_per_prompt']} "
            f"answer(s) to each of {value['n_prompts']} training prompts (`value_estimate: "
            f"per_prompt`): mean {value['mean']:.3f}, sd across prompts "
            f"{value['sd_across_prompts']:.3f}; no fit error on the training prompts.",
            "",
        ]
    return [
        "## V's error and the advantage by answer length",
        "",
        f"{by_length} On {value['heldout_prompts']} held-out "
        f"validation prompts, R − V(x) for π_ref's short answers "
        f"{_signed(value['mean_error_short_answers'])} ({value['short_answers']} of them), long "
        f"{_signed(value['mean_error_long_answers'])}; V's held-out explained variance "
        f"{_plain(value['explained_variance'])}.",
        "",
        f"V's level: its mean error there (R − V) {_signed(value['mean_error'])}; V's mean on "
        f"the training prompts {result['mean_value_on_training_prompts']:.3f}, against a mean "
        f"reward of {value['mean_reward_of_reference_answers']:.3f} for π_ref's answers to "
        f"the validation prompts it was fitted on.",
        "",
    ]


def measured(result: dict) -> str:
    """Whose run was measured: the seed's own, or one of its tries (`bench.hh_tries`)."""
    name = result.get("measured")
    return f"seed {result['seed']}" + (f", try {name}" if name else "")


def advantage_name(result: dict) -> str:
    """Which A the figures are of, as the markdown names it."""
    if result["length_neutral_advantage"]:
        return "length-neutral A (`length_neutral_advantage`)"
    return "paper's A"


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _plain(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.3f}"
