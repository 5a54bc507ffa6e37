"""The reward-hacking audit in words: `audit.md` (flags, thresholds, the collapse table, the
constant answers) and the lines under a comparison table (`alol.reports.audit` measures)."""

from __future__ import annotations

from alol.reports.audit import REFERENCE, Audit, at_chance
from alol.reports.collapse import short_text
from alol.reports.metrics import formatted, signed


def audit_markdown(audit: Audit, level: int = 1) -> str:
    """`audit.md`: the flags, the thresholds, the collapse table, the constant answers; its
    title a heading of `level` (sections one below)."""
    title, section = "#" * level, "#" * (level + 1)
    lines = [f"{title} Reward-hacking audit", "", f"{section} Flags", ""]
    lines += [f"- {flag}" for flag in audit.flags] or ["No flag: no measure crossed a threshold."]
    lines += ["", "Thresholds (settable in the config):", ""]
    lines += [f"- {line}" for line in audit.thresholds.described()]
    dependent = [name for name, independent in audit.independent_judges.items() if not independent]
    if dependent:
        lines += [
            "",
            f"Judges that share a component with the training reward (not independent): "
            f"{', '.join(dependent)}.",
        ]
    lines += _agreement_lines(audit)
    lines += ["", f"{section} Collapse and drift, beside π_ref", "", _collapse_table(audit), ""]
    lines += [f"{section} At equal answer length", "", *_equal_length_lines(audit), ""]
    lines += [f"{section} Constant answers", "", _constants_table(audit), ""]
    return "\n".join(lines)


def _agreement_lines(audit: Audit) -> list[str]:
    """Each fitted judge's held-out agreement with its labels, then what makes any judge's
    figures weigh less, so a reader weighs its falls."""
    known = {name: a for name, a in audit.judge_agreement.items() if a is not None}
    lines = []
    if known:
        lines += ["", "Judges fitted by `alol reward-model`, on their held-out pairs:", ""]
    for name, agreement in known.items():
        verdict = "no better than chance" if at_chance(agreement) else "better than chance"
        lines.append(
            f"- {name}: orders {agreement.accuracy:.1%} ± {agreement.standard_error:.1%} of "
            f"{agreement.pairs} pairs as its labels do, {verdict}"
        )
    return lines + _judge_warning_lines(audit, "Judges whose figures weigh less:")


def _judge_warning_lines(audit: Audit, title: str) -> list[str]:
    if not audit.judge_warnings:
        return []
    return ["", title, "", *(f"- {warning}" for warning in audit.judge_warnings)]


def _equal_length_lines(audit: Audit) -> list[str]:
    """Each model's change from π_ref as measured, then at equal answer length (± its
    standard error), with what doubling an answer's length is worth."""
    measures = ["reward", *audit.models[REFERENCE].judges]
    if len(audit.models) == 1:
        return ["No model besides π_ref to compare."]
    lines = [
        "Per prompt, a model's change from π_ref is fitted as a constant plus a term in log2 of "
        "the answers' length ratio: the constant is the change at equal length, the slope what "
        "doubling an answer's length is worth. A gain that fades here comes from length.",
        "",
        "| model | measure | change | at equal length | per doubling of length |",
        "|---|---|---|---|---|",
    ]
    for name, model in audit.models.items():
        if name == REFERENCE:
            continue
        for measure in measures:
            raw = model.reward_change if measure == "reward" else model.judge_changes[measure]
            found = model.at_equal_length.get(measure)
            equal = "–" if found is None else f"{signed(found.change)} ± {found.standard_error:.3f}"
            slope = "–" if found is None else signed(found.per_doubling)
            lines.append(f"| {name} | {measure} | {signed(raw)} | {equal} | {slope} |")
    return lines


def _collapse_table(audit: Audit) -> str:
    header = [
        "model",
        "reward",
        "one answer's share",
        "most frequent answer",
        "distinct-1",
        "distinct-2",
        "length (words)",
        "cut off",
        "looping",
        "empty",
        "log π_θ/π_ref (nats)",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, model in audit.models.items():
        c = model.collapse
        cells = [
            "π_ref" if name == REFERENCE else name,
            f"{model.reward:.3f}",
            f"{c.template_share:.0%}",
            short_text(c.top_answer, 40).replace("|", "\\|"),
            f"{c.distinct_1:.3f}",
            f"{c.distinct_2:.3f}",
            f"{c.mean_length_words:.1f}",
            formatted(c.cut_off_share, ".0%"),
            f"{c.loop_share:.0%}",
            f"{c.empty_share:.0%}",
            formatted(model.log_ratio, ".1f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _constants_table(audit: Audit) -> str:
    judges = list(audit.models[REFERENCE].judges)
    header = ["answer given to every test prompt", "origin", "reward", *judges]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    reference = audit.models[REFERENCE]
    lines.append(
        "| π_ref's own answers | – | "
        + " | ".join([f"{reference.reward:.3f}", *(f"{reference.judges[j]:.3f}" for j in judges)])
        + " |"
    )
    for constant in audit.constants:
        cells = [
            f"“{short_text(constant.text)}”".replace("|", "\\|"),
            constant.origin,
            f"{constant.reward:.3f}",
            *(formatted(constant.judges.get(j), ".3f") for j in judges),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def audit_summary(audit: Audit) -> str:
    """The lines under the comparison table: every flag, or that there is none, and what makes
    a judge's figures weigh less."""
    if not audit.flags:
        lines = ["Audit: no flag (no model crossed a threshold; eval/audit.md has the measures)."]
    else:
        lines = ["Audit flags (thresholds and measures in eval/audit.md):", ""]
        lines += [f"- {flag}" for flag in audit.flags]
    title = "Judges whose figures weigh less (eval/audit.md has each fitted judge's agreement):"
    return "\n".join(lines + _judge_warning_lines(audit, title))
