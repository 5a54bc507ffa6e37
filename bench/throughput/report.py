"""The report of a run, computed from its measured rows: MFU, the one-pass projection over an
HH-sized dataset, the targets, and the Markdown of a throughput or precompute run.
"""

from __future__ import annotations

import numpy as np

from bench.throughput.cases import PRECOMPUTE_METHODS
from bench.throughput.hh_batches import VOCAB_SIZE

HH_TRAIN_PAIRS = 160_800
"""Pairs in Anthropic HH-RLHF's train split: the dataset size the one-pass projection uses."""


def add_mfu(row: dict, params: int, peak_tflops: float | None) -> dict:
    """Model FLOPs utilisation of the tokens the decoder actually ran."""
    if peak_tflops and "error" not in row:
        tokens_per_s = row.get("decoder_tokens_per_s", row["tokens_per_s"])
        flops = row["flops_per_token_factor"] * params * tokens_per_s
        row["mfu"] = flops / (peak_tflops * 1e12)
    return row


def describe(row: dict) -> str:
    if "error" in row:
        return f"failed: {row['error']}"
    return f"{row['tokens_per_s']:,.0f} tokens/s, {row['peak_memory_mib']:,.0f} MiB, MFU {_fmt(row.get('mfu'), '.1%')}"


def one_pass_projection(
    rows: dict[str, dict], trl: dict | None, lengths: dict, trl_bar_tokens_per_s: float | None
) -> dict:
    """Wall time of one pass over an HH-sized dataset (HH_TRAIN_PAIRS pairs, HH length mix),
    from the measured rates. A-LoL: the reference pass over both responses of every pair
    (2N sequences, each prompt run once for both: `precompute`'s rate, which counts the 2N
    sequences' tokens), which also gives V(x) from its prompt states, and training on the A > 0
    share of the 2N sequences, one per example. DPO: its reference pass over the N pairs (alol's
    shares prompts too), then one epoch over the N pairs (two sequences each)."""
    pairs = np.array(lengths["pairs"], dtype=np.float64)
    n, positive = HH_TRAIN_PAIRS, lengths["fraction_positive"]
    prompt, response = pairs[:, 0].mean(), pairs[:, 1:].mean()
    sequence_tokens = 2 * n * (prompt + response)
    pair_tokens = n * float((2 * pairs[:, 0] + pairs[:, 1] + pairs[:, 2]).mean())
    reference = rows["precompute"]["tokens_per_s"]
    alol = {
        "reference_pass_s": sequence_tokens / reference,
        "training_s": positive * sequence_tokens / rows["a_lol"]["tokens_per_s"],
    }
    alol["total_s"] = sum(alol.values())
    dpo_alol = {
        "reference_pass_s": pair_tokens / reference,
        "training_s": pair_tokens / rows["dpo"]["tokens_per_s"],
    }
    dpo_alol["total_s"] = sum(dpo_alol.values())
    projection = {
        "pairs": n,
        "fraction_positive": positive,
        "mean_prompt_tokens": prompt,
        "mean_response_tokens": response,
        "a_lol": alol,
        "dpo_alol": dpo_alol,
        "a_lol_over_dpo_alol": alol["total_s"] / dpo_alol["total_s"],
    }
    if "precompute_unshared" in rows:
        unshared = sequence_tokens / rows["precompute_unshared"]["tokens_per_s"]
        projection["a_lol_reference_pass_unshared_s"] = unshared
    if trl and "tokens_per_s" in trl:
        dpo_trl = {
            "reference_pass_s": pair_tokens / trl["setup_tokens_per_s"],
            "training_s": pair_tokens / trl["tokens_per_s"],
        }
        dpo_trl["total_s"] = sum(dpo_trl.values())
        projection["dpo_trl"] = dpo_trl
        projection["a_lol_over_dpo_trl"] = alol["total_s"] / dpo_trl["total_s"]
    elif trl_bar_tokens_per_s:
        # Figure measured earlier, not in this run; TRL's reference pass priced at alol's
        # per-row rate (TRL shares no prompts; its full logits would cost more still).
        per_row = rows.get("precompute_unshared", rows["precompute"])["tokens_per_s"]
        dpo_bar = {
            "reference_pass_s": pair_tokens / per_row,
            "training_s": pair_tokens / trl_bar_tokens_per_s,
        }
        dpo_bar["total_s"] = sum(dpo_bar.values())
        projection["dpo_trl_earlier_figure"] = dpo_bar
        projection["a_lol_over_dpo_trl_earlier_figure"] = alol["total_s"] / dpo_bar["total_s"]
    return projection


def targets(report: dict) -> list[dict]:
    """Each target whose rows the report holds (a run cut short, or a levers-only run, has
    fewer)."""
    rows = {row["method"]: row for row in report["methods"] if "error" not in row}
    fixed = {
        name: row for name, row in report.get("fixed_640_128", {}).items() if "error" not in row
    }
    return [
        *_step_targets(rows, "HH lengths"),
        *_interleaved_target(report.get("a_lol_vs_nll_interleaved")),
        *_step_targets(fixed, "640/128 rows"),
        *_precompute_target(fixed),
        *_mfu_targets(rows, fixed, report.get("levers", [])),
        *_one_pass_targets(report.get("one_pass", {})),
    ]


def _step_targets(rows: dict, shape: str) -> list[dict]:
    if not {"a_lol", "nll"} <= rows.keys():
        return []
    alol, nll = rows["a_lol"], rows["nll"]
    found = [
        _target(f"A-LoL step time / NLL step time, {shape}", alol["seconds_per_step"] / nll["seconds_per_step"], 1.05, "<="),
        _target(f"A-LoL peak memory / NLL peak memory, {shape}", alol["peak_memory_mib"] / nll["peak_memory_mib"], 1.05, "<="),
    ]  # fmt: skip
    if "hf_nll" in rows:
        ratio = alol["seconds_per_step"] / rows["hf_nll"]["seconds_per_step"]
        found.append(
            _target(f"A-LoL step time / HF-loss NLL step time, {shape}", ratio, 1.05, "<=")
        )
    return found


def _interleaved_target(interleaved: dict | None) -> list[dict]:
    if not interleaved:
        return []
    name = (
        "A-LoL step time / NLL step time, HH lengths, "
        f"{interleaved['rounds']} interleaved rounds (median)"
    )
    return [_target(name, interleaved["ratio"], 1.05, "<=")]


def _precompute_target(fixed: dict) -> list[dict]:
    """One row per shared-prompt pass the run measured, eager and compiled named apart; the
    full-logits baseline is eager in both (scoring as TRL does it)."""
    if "precompute_full_logits" not in fixed:
        return []
    full_logits_s = fixed["precompute_full_logits"]["seconds_per_step"]
    passes = {
        "precompute": "shared prompts, eager",
        "precompute_compiled": "shared prompts, compiled layers",
    }
    return [
        _target(
            f"precompute speed-up over full-logits scoring, 640/128 ({label})",
            full_logits_s / fixed[method]["seconds_per_step"],
            2.0,
            ">=",
        )
        for method, label in passes.items()
        if method in fixed
    ]


def _mfu_targets(rows: dict, fixed: dict, levers: list[dict]) -> list[dict]:
    found = [
        _target(f"A-LoL training MFU, {shape}", measured["a_lol"]["mfu"], 0.40, ">=")
        for shape, measured in (("HH lengths", rows), ("640/128 rows", fixed))
        if "mfu" in measured.get("a_lol", {})
    ]
    measured_levers = [row for row in levers if "mfu" in row]
    if measured_levers:
        best = max(measured_levers, key=lambda row: row["mfu"])
        found.append(
            _target(f"A-LoL training MFU, HH lengths, {best['lever']}", best["mfu"], 0.40, ">=")
        )
    return found


def _one_pass_targets(projection: dict) -> list[dict]:
    comparisons = {
        "a_lol_over_dpo_trl": "TRL's DPO, this run",
        "a_lol_over_dpo_trl_earlier_figure": "TRL's DPO, figure measured earlier",
        "a_lol_over_dpo_alol": "alol's DPO objective, this run",
    }
    return [
        _target(f"one HH pass: A-LoL wall time / {label}", projection[key], 0.5, "<=")
        for key, label in comparisons.items()
        if key in projection
    ]


def _target(name: str, value: float, bound: float, sense: str) -> dict:
    holds = value <= bound if sense == "<=" else value >= bound
    return {"target": name, "value": value, "bound": f"{sense} {bound:g}", "holds": holds}


# ---------------------------------------------------------------------------------------------
# Markdown


def markdown(report: dict) -> str:
    """The report as Markdown: training methods, their 640/128 rows, the precompute cases (both
    shapes, one table), levers, the one-pass projection and the targets, each section only when
    the run has it (a `--cases levers` run has the a_lol row and the levers alone)."""
    config = report["config"]
    lines = [
        f"# Training throughput on {report['device']}",
        "",
        f"Random-init Llama `{config['model']}` ({report['parameters'] / 1e9:.3f}B parameters, "
        f"vocab {VOCAB_SIZE}), precision `{config['precision']}`, attention `{config['attention']}`, "
        f"{_batching(config)}, gradient checkpointing "
        f"{'on' if config['gradient_checkpointing'] else 'off'}, compiled layers "
        f"{'on' if config.get('compile_layers') else 'off'}; HH lengths capped at "
        f"{config['max_prompt_length']}/{config['max_response_length']}. Each case: one untimed pass "
        f"over its {config['warmup'] + config['steps']} batches (the biggest first), then "
        f"{config['steps']} timed. {report['versions']}. " + _load_and_peak(report),
        "",
        METHODS_HEADER,
    ]
    nll = next((row for row in report["methods"] if row["method"] == "nll"), None)
    for row in report["methods"]:
        if row["method"] not in PRECOMPUTE_METHODS:
            lines.append(_row(row["method"], row, nll))
    trl = report.get("trl_dpo")
    if trl:
        lines.append(_row("TRL DPOTrainer (precomputed reference)", trl, nll))
        if "setup_s" in trl:
            lines += ["", f"TRL's setup (tokenizing + reference precompute): {trl['setup_s']:.1f} s, "
                      f"{trl['setup_tokens_per_s']:,.0f} tokens/s."]  # fmt: skip
    if "fixed_640_128" in report:
        fixed = report["fixed_640_128"]
        lines += ["", f"Every row exactly {config['max_prompt_length']} + "
                  f"{config['max_response_length']} tokens (the paper's caps):", "", METHODS_HEADER]  # fmt: skip
        lines += [
            _row(name, row, fixed.get("nll"))
            for name, row in fixed.items()
            if name not in PRECOMPUTE_METHODS
        ]
    precompute = [
        ("HH lengths", {r["method"]: r for r in report["methods"] if r["method"] in PRECOMPUTE_METHODS}),
        ("640 + 2 x 128", {name: r for name, r in report.get("fixed_640_128", {}).items() if name in PRECOMPUTE_METHODS}),
    ]  # fmt: skip
    if any(rows for _, rows in precompute):
        lines += ["", "Reference precompute (HH pairs, and pairs of exactly "
                  f"{config['max_prompt_length']} + 2 x {config['max_response_length']} tokens):",
                  "", *_precompute_table(precompute), "", PRECOMPUTE_NOTE]  # fmt: skip
    if report.get("levers"):
        lines += _lever_table(report)
    if report.get("one_pass"):
        lines += _projection(report["one_pass"])
    if report.get("targets"):
        lines += _targets_table(report["targets"])
    lines += [f"\nNote: {note}" for note in report.get("notes", [])]
    return "\n".join(lines) + "\n"


METHODS_HEADER = (
    "| method | s/step | tokens/s | examples/s | examples/step | padding | peak MiB | MFU "
    "| vs nll time | vs nll mem |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def _batching(config: dict) -> str:
    if config.get("max_tokens"):
        batching = f"token-budget batches of {config['max_tokens']:,} padded tokens"
    else:
        batching = f"batch {config['batch_size']}, `{config['grouping']}` grouping"
    if config.get("pad_to_multiple_of"):
        batching += f", padded to a multiple of {config['pad_to_multiple_of']}"
    return batching


def _lever_table(report: dict) -> list[str]:
    """Each lever's a_lol step beside the run's own a_lol row, with the ratios of both rates:
    a step holds a different number of examples under each lever, so s/step alone misleads."""
    alol = next((row for row in report["methods"] if row["method"] == "a_lol"), None)
    lines = ["", "Levers (`a_lol` step; each changes the settings it names from the run above; "
             "token budgets are multiples of the fixed batches' mean padded tokens; warm-up s "
             "holds the untimed pass, compiling included; ratios against the run's `a_lol` row):", "",
             "| lever | s/step | tokens/s | examples/s | examples/step | padding | peak MiB | MFU "
             "| warm-up s | tokens/s vs a_lol | examples/s vs a_lol |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    rows = ([("a_lol (the run's batches)", alol)] if alol else []) + [
        (row["lever"], row) for row in report["levers"]
    ]
    for name, row in rows:
        if "error" in row:
            lines.append(f"| {name} | failed: {row['error'][:90]} |" + " |" * 9)
            continue
        lines.append(
            f"| {name} | {row['seconds_per_step']:.4f} | {row['tokens_per_s']:,.0f} | "
            f"{row['examples_per_s']:,.1f} | {_fmt(row.get('examples_per_step'), '.1f')} | "
            f"{row['padding']:.1%} | {row['peak_memory_mib']:,.0f} | {_fmt(row.get('mfu'), '.1%')} "
            f"| {row['warmup_s']:.1f} | {_ratio(row, alol, 'tokens_per_s')} | "
            f"{_ratio(row, alol, 'examples_per_s')} |"
        )
    return lines


def _ratio(row: dict, reference: dict | None, key: str) -> str:
    if reference is None or "error" in reference:
        return "–"
    return f"{row[key] / reference[key]:.2f}x"


def _projection(projection: dict) -> list[str]:
    lines = ["", f"One pass over {projection['pairs']:,} HH pairs (projected from the rates above; "
             f"{projection['fraction_positive']:.0%} of responses with A > 0):", "",
             "A-LoL's reference pass gives V(x) too (the value head reads its prompt states) and "
             "runs each prompt once for both its responses" + _unshared_pass(projection) + ".", "",
             "| run | reference pass s | training s | total s |", "|---|---:|---:|---:|"]  # fmt: skip
    for name in ("a_lol", "dpo_alol", "dpo_trl", "dpo_trl_earlier_figure"):
        if name in projection:
            part = projection[name]
            lines.append(
                f"| {name} | {part['reference_pass_s']:.0f} | {part['training_s']:.0f} "
                f"| {part['total_s']:.0f} |"
            )
    return lines


def _targets_table(found: list[dict]) -> list[str]:
    lines = ["", "| target | value | bound | holds |", "|---|---:|---:|---|"]
    for target in found:
        lines.append(
            f"| {target['target']} | {target['value']:.3f} | {target['bound']} | "
            f"{'yes' if target['holds'] else 'NO'} |"
        )
    return lines


PRECOMPUTE_NOTE = (
    "Precompute rows score HH pairs (a prompt with its chosen and rejected response; "
    "`batch_size` rows = `batch_size / 2` pairs): tokens/s counts each pair's per-row input "
    "tokens (2p + c + r) for every method, so they compare as pairs/s; `precompute` and "
    "`precompute_compiled` feed their decoder p + c + r of them (decoder tokens/s) and their "
    "padding is that of their own inputs. `precompute_full_logits` runs eager, as TRL scores; "
    "`precompute_compiled` runs `precompute` on a weight-sharing copy of the model whose layers' "
    "cache-free parts (norms, MLP) are compiled, after the eager cases: its HH row's warm-up s (the untimed pass) "
    "holds the compile, its 640 + 2 x 128 row's only the recompiles of the new shapes. Speed-ups "
    "are ratios of s/step on the same batches."
)


def precompute_markdown(report: dict) -> str:
    """The precompute-only report: each model, HH lengths and 640/128, with the ratios."""
    config = report["config"]
    lines = [
        f"# Reference precompute on {report['device']}: each prompt once (eager, compiled) vs "
        "once per response vs full logits",
        "",
        f"Random-init Llama models (vocab {VOCAB_SIZE}), precision `{config['precision']}`, "
        f"attention `{config['attention']}`, batch {config['batch_size']} rows; HH lengths "
        f"capped at {config['max_prompt_length']}/{config['max_response_length']}, and pairs of "
        f"exactly {config['max_prompt_length']} + 2 x {config['max_response_length']} tokens. "
        f"Each case: one untimed pass over its {config['warmup'] + config['steps']} batches, then "
        f"{config['steps']} timed. {report['versions']}. " + _load_and_peak(report),
        "",
        PRECOMPUTE_NOTE,
    ]
    for run in report["runs"]:
        shapes = [("HH lengths", run["hh"]), ("640 + 2 x 128", run["fixed_640_128"])]
        lines += ["", f"## `{run['model']}` ({run['parameters'] / 1e6:.0f}M parameters)", ""]
        lines += _precompute_table(shapes)
    return "\n".join(lines) + "\n"


def _precompute_table(shapes: list[tuple[str, dict[str, dict]]]) -> list[str]:
    """One table of the precompute rows of each (label, {method: row}) shape, with each row's
    speed-up over full-logits scoring, over the per-row pass and over the eager shared pass."""
    lines = [
        "| pairs | method | s/step | pairs/s | tokens/s | decoder tokens/s | padding | peak MiB "
        "| MFU | warm-up s | speed-up vs full logits | vs unshared | vs shared eager |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, rows in shapes:
        ordered = [method for method in PRECOMPUTE_METHODS if method in rows]  # JSON sorts keys
        lines += [_precompute_row(label, method, rows[method], rows) for method in ordered]
    for label, rows in shapes:
        compiled = rows.get("precompute_compiled", {})
        if "dynamo_graphs" in compiled:
            lines.append(
                f"\n`precompute_compiled`, {label}: graphs compiled {compiled['dynamo_graphs']}, "
                f"frames dynamo gave up on {compiled['dynamo_frames_given_up']}"
                + (GIVEN_UP_NOTE if compiled["dynamo_frames_given_up"] else ".")
            )
    return lines


GIVEN_UP_NOTE = (
    " (dynamo's recompile limit, shared by every layer: calls that none of the graphs fits, "
    "such as later layers' KV-cache calls, ran eager)."
)


def _precompute_row(label: str, method: str, row: dict, rows: dict) -> str:
    if "error" in row:
        return f"| {label} | {method} | failed: {row['error'][:90]} |" + " |" * 10

    def speed_over(other: str) -> str:
        if "error" in rows.get(other, {"error": ""}):
            return "–"
        return f"{rows[other]['seconds_per_step'] / row['seconds_per_step']:.2f}x"

    return (
        f"| {label} | {method} | {row['seconds_per_step']:.4f} | {row['examples_per_s']:,.2f} | "
        f"{row['tokens_per_s']:,.0f} | {_fmt(row.get('decoder_tokens_per_s'), ',.0f')} | "
        f"{row['padding']:.1%} | {row['peak_memory_mib']:,.0f} | {_fmt(row.get('mfu'), '.1%')} | "
        f"{row['warmup_s']:.1f} | {speed_over('precompute_full_logits')} | "
        f"{speed_over('precompute_unshared')} | {speed_over('precompute')} |"
    )


def _unshared_pass(projection: dict) -> str:
    if "a_lol_reference_pass_unshared_s" not in projection:
        return ""
    return f" (once per response: {projection['a_lol_reference_pass_unshared_s']:.0f} s)"


def _load_and_peak(report: dict) -> str:
    """The CPU's load (other processes slow a CPU run) or the GPU's MFU denominator."""
    if report.get("peak_tflops") is None:
        if "load_average_1min" not in report:
            return "The run stopped before its end."
        return f"1-minute load average {report['load_average_1min']:.1f} at the end."
    return (
        f"MFU against {report['peak_tflops']:.0f} TFLOP/s (measured bf16 matmul: "
        f"{report['measured_matmul_tflops']:.0f} TFLOP/s)."
    )


def _row(name: str, row: dict, nll: dict | None) -> str:
    if "error" in row:
        return f"| {name} | failed: {row['error'][:90]} | | | | | | | | |"
    ratios = (
        f"{row['seconds_per_step'] / nll['seconds_per_step']:.2f}x | "
        f"{row['peak_memory_mib'] / nll['peak_memory_mib']:.2f}x"
        if nll and "error" not in nll
        else " | "
    )
    return (
        f"| {name} | {row['seconds_per_step']:.4f} | {row['tokens_per_s']:,.0f} | "
        f"{row['examples_per_s']:,.1f} | {_fmt(row.get('examples_per_step'), '.1f')} | "
        f"{_fmt(row.get('padding'), '.1%')} | {row['peak_memory_mib']:,.0f} | "
        f"{_fmt(row.get('mfu'), '.1%')} | {ratios} |"
    )


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)
