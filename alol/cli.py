"""`alol` command line: one subcommand per pipeline stage, YAML configs, flags = YAML keys.

Every option of `PipelineConfig` is both a YAML key (`max_steps: 200`) and a flag
(`--max-steps 200`); flags given on the command line override the YAML file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from alol.data import DataError
from alol.errors import AlolError
from alol.objectives import OBJECTIVES
from alol.pipeline import (
    PipelineConfig,
    run_advantage,
    run_all,
    run_eval,
    run_sft,
    run_train,
    run_value,
)
from alol.rewards import RewardError

COMMANDS = {
    "sft": "Train the reference policy π_ref with NLL on the training responses (full or LoRA).",
    "value": "Decode π_ref on validation prompts, score them, fit the value head V(x).",
    "advantage": "Precompute reference log-probs, V(x), rewards and A = R − V for the training set.",
    "train": "Train one or more objectives from π_ref (A-LoL, its variants, or a baseline).",
    "eval": "Decode test prompts with π_ref and each trained model; reward, diversity, win-rate.",
    "run": "Chain sft → value → advantage → train → eval; finished stages with the same inputs are skipped.",
}


def _objective_help() -> str:
    return "\n".join(f"  {name:<15} {objective.summary}" for name, objective in OBJECTIVES.items())


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _optional_number(kind: type):
    def parse(text: str):
        return None if text.lower() in ("none", "null", "off") else kind(text)

    parse.__name__ = kind.__name__
    return parse


def _add_option(
    parser: argparse.ArgumentParser, config_field: dataclasses.Field, annotation: Any
) -> None:
    """One flag per config field, typed from the annotation; unset flags leave YAML values alone."""
    kwargs: dict[str, Any] = {"help": config_field.metadata["help"], "default": argparse.SUPPRESS}
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    members = typing.get_args(annotation) if union else (annotation,)
    optional = type(None) in members
    base = next(a for a in members if a is not type(None))
    if base is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(base) is list:
        kwargs["nargs"] = "+"
    elif base in (int, float):
        kwargs["type"] = _optional_number(base) if optional else base
    flags = [_flag(config_field.name)]
    if config_field.name == "objectives":
        flags.append("--objective")
    parser.add_argument(*flags, dest=config_field.name, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alol",
        description="Offline RL for language models on existing data: A-LoL and its baselines.",
        epilog="Objectives:\n" + _objective_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    hints = typing.get_type_hints(PipelineConfig)
    for command, description in COMMANDS.items():
        sub = commands.add_parser(
            command,
            help=description,
            description=description,
            epilog="Objectives:\n" + _objective_help(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("config", nargs="?", help="YAML file whose keys are the options below.")
        for config_field in dataclasses.fields(PipelineConfig):
            if command == "run" or command in config_field.metadata["stages"]:
                _add_option(sub, config_field, hints[config_field.name])
    return parser


def load_config(path: str | None, overrides: dict[str, Any]) -> PipelineConfig:
    """YAML values, then command-line flags; an unknown key is an error that names it."""
    values: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise AlolError(f"{path}: a config file must be a mapping of option: value")
        values = {key.replace("-", "_"): value for key, value in loaded.items()}
        if "objective" in values:
            values["objectives"] = values.pop("objective")
    known = {f.name for f in dataclasses.fields(PipelineConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise AlolError(f"{path}: unknown option(s) {', '.join(unknown)}; see `alol run --help`.")
    values.update(overrides)
    return PipelineConfig(**values)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    try:
        cfg = load_config(args.pop("config"), args)
        _run(command, cfg)
    except (AlolError, DataError, RewardError, ValueError, OSError) as error:
        print(f"alol {command}: error: {error}", file=sys.stderr)
        return 2
    return 0


def _run(command: str, cfg: PipelineConfig) -> None:
    if command == "sft":
        print(f"reference policy saved to {run_sft(cfg)}")
    elif command == "value":
        out = run_value(cfg)
        print(json.dumps(json.loads((out / "value_metrics.json").read_text()), indent=2)[:2000])
    elif command == "advantage":
        run_advantage(cfg)
        print((cfg.root / "advantage" / "advantage_stats.json").read_text())
    elif command == "train":
        for name in cfg.objectives:
            print(f"{name}: model saved to {run_train(cfg, name)}")
    elif command == "eval":
        from alol.evaluate import comparison_table

        print(comparison_table(run_eval(cfg)))
    elif command == "run":
        run_all(cfg)


if __name__ == "__main__":
    sys.exit(main())
