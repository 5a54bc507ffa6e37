"""Benchmark: a training step of every objective beside a plain NLL step, the precompute pass,
and (when installed) TRL's DPO trainer, on HH-shaped batches; then the levers on the A-LoL step
(token budgets, compiled layers, bf16 weights, ...). Figures and notes: bench/NOTES.md.

    pip install -e .                                   # once: the script imports alol
    python -m bench.throughput --make-lengths          # once: HH lengths -> bench/hh_lengths.json
    python -m bench.throughput --steps 12 --levers random micro gradient eager "token budget" \
        "compiled layers" "pad to"                     # CPU, tiny Llama -> results/throughput_cpu.*
    python -m bench.throughput --cases levers --model small --steps 12 \
        --levers "token budget 4x" "compiled layers"   # CPU, 56M: eager/compiled x fixed/budget
                                                       #   -> results/throughput_levers_cpu.*
    bash bench/device_suite.sh                         # H100, 1.1B, one device call: everything
                                                       #   -> results/throughput{,_levers}_cuda.*
    python -m bench.throughput --cases precompute --model tiny small
                                                       # the reference passes only, CPU
                                                       #   -> results/precompute_cpu.*

Models are Llama-shaped and randomly initialised from a config (no download). Prompt and
response lengths are those of the real HH data in `../shared/data/hh`, tokenized with a 32k
byte-level BPE trained on that text (`--make-lengths`; the lengths travel in
`bench/hh_lengths.json`), capped at 640/128 tokens as in the paper. Token ids are random: only
shapes matter for speed.

Training batches hold `--batch-size` examples of similar lengths, as the trainer's length
grouping cuts them, or (`--max-tokens`, the "token budget" levers) as many examples as fit a
padded-token budget, packed by `alol.data.batching.pack_to_token_budget` from a prefix of the same
stream of draws, each batch's loss scaled by `example_weight` as AlolTrainer scales it. Batches
then hold different numbers of examples, so compare tokens/s and examples/s, not s/step.

A step is what a training loop does per batch: forward (under bf16 autocast when asked), the
objective, backward, gradient clipping at 1.0, AdamW (fused on CUDA) and zero_grad. Each case
runs its `--warmup` + `--steps` batches once untimed (compiling, for compiled layers), then the
`--steps` again, timed with one device sync at the end only, as in training. The timed batches
are a systematic sample of the pool's batches by length (`measured_batches`). Tokens are real
(non-padding) tokens; MFU = 6 x parameters x tokens / time / peak (2 x ... for the no-grad
precompute), parameters counted with the embeddings, against the card's dense bf16 datasheet
peak (`--peak-tflops`, 989 for an H100 SXM); the measured 8192^3 bf16 matmul rate is reported
beside it. Peak memory: `torch.cuda.max_memory_allocated` over the case (model, gradients,
optimizer state and activations); on CPU the process's resident-set high-water mark, reset
before each case, with one torch thread (two fight other processes on a busy 2-core machine).

The reference pass is timed four ways on the same HH pairs (`PRECOMPUTE_METHODS`): each prompt
once for both its responses (alol's default), once per response, full-vocabulary logits per
row (TRL's precompute, eager), and each prompt once again with compiled decoder layers (last,
after the eager cases). Their tokens/s all count the per-row input tokens, so they compare as
pairs per second; MFU counts the tokens each one's decoder ran.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
import transformers

from alol.atomic import write_json, write_text
from bench.common import device_name
from bench.throughput.cases import (
    EAGER_PRECOMPUTE_METHODS,
    MODEL_SHAPES,
    PRECISIONS,
    PRECOMPUTE_METHODS,
    TRAIN_METHODS,
    BenchConfig,
)
from bench.throughput.hh_batches import (
    BENCH,
    HH_DIR,
    LENGTHS_FILE,
    load_lengths,
    make_lengths,
    method_batches,
)
from bench.throughput.report import (
    add_mfu,
    describe,
    markdown,
    one_pass_projection,
    precompute_markdown,
    targets,
)
from bench.throughput.steps import (
    START,
    build_model,
    compiled_precompute_rows,
    free_memory,
    interleaved_step_ratio,
    measure_matmul_tflops,
    parameter_count,
    prepare_model,
    profile_steps,
    run_case,
    run_fixed_shape,
    run_levers,
)
from bench.throughput.trl_baseline import trl_dpo, trl_in_subprocess, trl_version

RESULTS = BENCH / "results"


# ---------------------------------------------------------------------------------------------
# Running it


def versions() -> str:
    found = f"torch {torch.__version__}, transformers {transformers.__version__}"
    return found + (f", trl {trl_version()}" if trl_version() else ", trl not installed")


def run_benchmark(config: BenchConfig, args: argparse.Namespace, out: Path) -> dict:
    lengths = load_lengths(args.lengths)
    pairs = lengths["pairs"]
    report: dict[str, Any] = {
        "device": device_name(config.device),
        "versions": versions(),
        "python": platform.python_version(),
        "config": asdict(config),
        "parameters": parameter_count(build_model(replace(config, device="meta"))),
        "peak_tflops": args.peak_tflops,
        "measured_matmul_tflops": measure_matmul_tflops(config.device),
        "lengths_source": lengths["source"],
        "methods": [],
    }

    def save() -> None:
        write_json(out, report)

    levers_only = args.cases == "levers"
    # TRL first, in its own process, while this one holds no model: the device is all its own.
    if trl_version() and not args.no_trl and not levers_only:
        trl = trl_in_subprocess(config, args.lengths, args.trl_timeout_s)
        report["trl_dpo"] = add_mfu(trl, report["parameters"], args.peak_tflops)
        print(f"trl dpo: {describe(trl)}", flush=True)
        save()
    base = build_model(config)
    model = prepare_model(base, config)
    methods = ["a_lol"] if levers_only else args.methods or [*TRAIN_METHODS, *PRECOMPUTE_METHODS]
    for method in (m for m in methods if m != "precompute_compiled"):
        row = run_case(method, model, method_batches(method, config, pairs), config)
        row = add_mfu({"method": method, **row}, report["parameters"], args.peak_tflops)
        report["methods"].append(row)
        print(f"{method}: {describe(row)}", flush=True)
        save()
    if not levers_only:
        batches = method_batches("a_lol", config, pairs)
        report["a_lol_vs_nll_interleaved"] = interleaved_step_ratio(model, batches, config)
        print(f"a_lol / nll interleaved: {report['a_lol_vs_nll_interleaved']}", flush=True)
        eager_precompute = [m for m in EAGER_PRECOMPUTE_METHODS if m in methods]
        fixed = run_fixed_shape(("nll", "a_lol", *eager_precompute), model, config)
        report["fixed_640_128"] = fixed
        for row in fixed.values():
            add_mfu(row, report["parameters"], args.peak_tflops)
        save()
    if "precompute_compiled" in methods and time.perf_counter() - START > args.compile_after_s:
        report.setdefault("notes", []).append(
            "precompute_compiled skipped: the run was past --compile-after-s when it came up."
        )
    elif "precompute_compiled" in methods:
        for shape, row in compiled_precompute_rows(model, config, pairs):
            row = add_mfu(row, report["parameters"], args.peak_tflops)
            if shape == "hh":
                report["methods"].append({"method": "precompute_compiled", **row})
            else:
                report["fixed_640_128"]["precompute_compiled"] = row
            save()
    if args.profile:
        report["profile"] = profile_steps(
            model, method_batches("a_lol", config, pairs), config, out
        )
        print(f"profile: {report['profile']}", flush=True)
        free_memory(config.device)
        save()
    if args.levers is not None or levers_only:
        run_levers(base, config, args, pairs, report, save)
    if not config.device.startswith("cuda"):
        report["load_average_1min"] = os.getloadavg()[0]  # other processes slow a CPU run
    return finish_report(report, lengths, args.trl_bar_tokens_per_s)


def run_precompute_benchmark(config: BenchConfig, models: list[str], args) -> dict:
    """The reference passes only (`PRECOMPUTE_METHODS`), at HH lengths and at 640/128, for each
    model in turn: the eager ones, then the compiled one."""
    lengths = load_lengths(args.lengths)
    report: dict[str, Any] = {
        "device": device_name(config.device),
        "versions": versions(),
        "python": platform.python_version(),
        "config": asdict(config),
        "peak_tflops": args.peak_tflops,
        "measured_matmul_tflops": measure_matmul_tflops(config.device),
        "lengths_source": lengths["source"],
        "runs": [],
    }
    for name in models:
        model_config = replace(config, model=name)
        model = prepare_model(build_model(model_config), model_config)
        run: dict[str, Any] = {"model": name, "parameters": parameter_count(model), "hh": {}}
        for method in EAGER_PRECOMPUTE_METHODS:
            batches = method_batches(method, model_config, lengths["pairs"])
            run["hh"][method] = run_case(method, model, batches, model_config)
            print(f"{name} HH {method}: {describe(run['hh'][method])}", flush=True)
        run["fixed_640_128"] = run_fixed_shape(EAGER_PRECOMPUTE_METHODS, model, model_config)
        for shape, row in compiled_precompute_rows(model, model_config, lengths["pairs"]):
            run[shape]["precompute_compiled"] = row
        for row in (*run["hh"].values(), *run["fixed_640_128"].values()):
            add_mfu(row, run["parameters"], args.peak_tflops)
        report["runs"].append(run)
        del model
        free_memory(config.device)
    if not config.device.startswith("cuda"):
        report["load_average_1min"] = os.getloadavg()[0]  # other processes slow a CPU run
    return report


def finish_report(report: dict, lengths: dict, trl_bar_tokens_per_s: float | None) -> dict:
    """Add the one-pass projection (when the run has its rows) and the targets, both computed
    from the measured rows."""
    rows = {row["method"]: row for row in report["methods"] if "error" not in row}
    if {"a_lol", "dpo", "precompute"} <= rows.keys():
        report["one_pass"] = one_pass_projection(
            rows, report.get("trl_dpo"), lengths, trl_bar_tokens_per_s
        )
    report["targets"] = targets(report)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--model",
        nargs="+",
        default=None,
        choices=MODEL_SHAPES,
        help="default: tiny on CPU, 1b on CUDA; several only with --cases precompute",
    )
    parser.add_argument(
        "--cases",
        default="all",
        choices=("all", "precompute", "levers"),
        help="all (-> throughput_<device>.*); only the reference passes "
        "(PRECOMPUTE_METHODS, HH lengths and 640/128, each --model) -> precompute_<device>.*; "
        "or the a_lol step and its --levers (all of them if none named) -> "
        "throughput_levers_<device>.*",
    )
    parser.add_argument(
        "--precision",
        default=None,
        choices=PRECISIONS,
        help="default: autocast on CUDA, fp32 on CPU",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: 16 on CUDA, 4 on CPU"
    )
    parser.add_argument("--grouping", default="length", choices=("length", "random"))
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="token-budget training batches of this many padded tokens instead of --batch-size "
        "examples (as --max-tokens-per-batch trains)",
    )
    parser.add_argument(
        "--pad-to-multiple-of", type=int, default=None, help="round training batch lengths up"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps (default: 12 on CUDA, 3 on CPU)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps (default: 2 on CUDA, 1 on CPU)"
    )
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument(
        "--compile-layers",
        action="store_true",
        help="torch.compile each decoder layer (alol's --compile-layers) for every method",
    )
    parser.add_argument("--methods", nargs="+", default=None, help="default: all")
    parser.add_argument(
        "--levers",
        nargs="*",
        default=None,
        help="also time the a_lol step under each lever (or the levers whose label starts with a word given)",
    )
    parser.add_argument(
        "--lever-budget-s",
        type=float,
        default=float("inf"),
        help="skip levers once the run is this old",
    )
    parser.add_argument(
        "--compile-after-s",
        type=float,
        default=float("inf"),
        help="skip compiled levers, and the compiled precompute of a --cases all run, once the "
        "run is this old",
    )
    parser.add_argument("--no-trl", action="store_true", help="skip TRL even when it is installed")
    parser.add_argument("--trl-timeout-s", type=float, default=600.0)
    parser.add_argument(
        "--trl-bar-tokens-per-s",
        type=float,
        default=None,
        help="TRL DPO training rate measured EARLIER on this card, used (and labelled so) when TRL cannot run here",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile three a_lol steps: host vs device time, top ops",
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="MFU denominator (default: 989 on CUDA)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default on CPU: 1; two threads on a busy 2-core box fight other processes)",
    )
    parser.add_argument("--lengths", type=Path, default=LENGTHS_FILE)
    parser.add_argument("--out", type=Path, default=None, help="JSON path; the .md goes beside it")
    parser.add_argument(
        "--make-lengths", action="store_true", help=f"tokenize {HH_DIR} into --lengths and exit"
    )
    parser.add_argument(
        "--from-json", type=Path, help="rebuild --out's report from a saved (partial) JSON"
    )
    parser.add_argument("--trl-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()  # fmt: skip

    cuda = args.device.startswith("cuda")
    if args.threads or not cuda:
        torch.set_num_threads(args.threads or 1)
    if args.make_lengths:
        lengths = make_lengths(HH_DIR, args.lengths)
        print(f"{len(lengths['pairs'])} pairs -> {args.lengths}")
        return
    if args.trl_worker:
        config_json, lengths_path = args.trl_worker
        config = BenchConfig(**json.loads(config_json))
        print(json.dumps(trl_dpo(config, load_lengths(Path(lengths_path))["pairs"])))
        return

    config = BenchConfig(
        device=args.device,
        model=(args.model or ["1b" if cuda else "tiny"])[0],
        precision=args.precision or ("autocast" if cuda else "fp32"),
        batch_size=args.batch_size or (16 if cuda else 4),
        grouping=args.grouping,
        max_tokens=args.max_tokens,
        pad_to_multiple_of=args.pad_to_multiple_of,
        steps=args.steps or (12 if cuda else 3),
        warmup=args.warmup or (2 if cuda else 1),
        gradient_checkpointing=args.gradient_checkpointing,
        compile_layers=args.compile_layers,
    )
    if args.peak_tflops is None and cuda:
        args.peak_tflops = 989.0
    if not cuda and os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        # Large frees must go back to the OS for the resident set to follow the live tensors.
        os.execve(
            sys.executable,
            [sys.executable, "-m", "bench.throughput", *sys.argv[1:]],
            {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"},
        )
    if args.model and len(args.model) > 1 and args.cases != "precompute":
        parser.error("several --model values need --cases precompute")
    stem = {"all": "throughput", "precompute": "precompute", "levers": "throughput_levers"}
    out = args.out or RESULTS / f"{stem[args.cases]}_{args.device.split(':')[0]}.json"
    if args.cases == "precompute":
        report = run_precompute_benchmark(config, args.model or [config.model], args)
        write_json(out, report)
        table = precompute_markdown(report)
        write_text(out.with_suffix(".md"), table)
        print(table)
        return
    if args.from_json:
        # A run cut short by a time limit saves its JSON after every case: finish it here.
        report = json.loads(args.from_json.read_text())
        if "runs" in report:  # a `--cases precompute` report: only its Markdown to rebuild
            write_text(out.with_suffix(".md"), precompute_markdown(report))
            return
        report = finish_report(report, load_lengths(args.lengths), args.trl_bar_tokens_per_s)
    else:
        report = run_benchmark(config, args, out)
    write_json(out, report)
    table = markdown(report)
    write_text(out.with_suffix(".md"), table)
    print(table)


if __name__ == "__main__":
    main()
