"""Per-prompt values (`value_estimate: per_prompt`): V(x) as the mean reward of π_ref's own
scored answers to each training prompt, saved with the model that answered and read back by
the advantage stage. Nothing is fitted, so V(x) has no fit error on the very prompts A-LoL
trains on: a value head fitted on a few hundred validation prompts can miss what the prompts
differ by (a reward that pays one kind of prompt more than another), and every answer to the
prompts it underrates then looks better than π_ref's."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path

from alol.atomic import write_json
from alol.errors import AlolError

VALUES_FILE = "prompt_values.json"


def mean_per_prompt(prompts: Sequence[str], rewards: Sequence[float]) -> dict[str, float]:
    """Each distinct prompt's mean reward over its answers (`prompts` repeats a prompt once per
    answer)."""
    answers: dict[str, list[float]] = {}
    for prompt, reward in zip(prompts, rewards, strict=True):
        answers.setdefault(prompt, []).append(reward)
    return {prompt: statistics.fmean(rewards) for prompt, rewards in answers.items()}


def per_prompt_report(values: dict[str, float], samples_per_prompt: int) -> dict:
    """What `value_metrics.json` says of per-prompt values: how many, their level and spread."""
    numbers = list(values.values())
    return {
        "estimate": "per_prompt",
        "targets_from": "reference samples",
        "n_prompts": len(numbers),
        "samples_per_prompt": samples_per_prompt,
        "mean": statistics.fmean(numbers),
        "sd_across_prompts": statistics.stdev(numbers) if len(numbers) > 1 else 0.0,
    }


def save_prompt_values(
    directory: Path, values: dict[str, float], model: dict[str, str], report: dict
) -> None:
    """Write the values (keyed by the prompt as π_ref saw it) with the record of the model that
    answered (`alol.provenance.model_record`) and how they were made, atomically."""
    write_json(directory / VALUES_FILE, {"model": model, "report": report, "values": values})


def load_prompt_values(directory: Path) -> dict[str, float]:
    """The values `save_prompt_values` wrote: rendered prompt → V(x)."""
    values = _read(directory).get("values")
    if not isinstance(values, dict) or not all(_is_number(v) for v in values.values()):
        raise AlolError(_corrupt_message(directory / VALUES_FILE, "no table of numbers"))
    return {prompt: float(value) for prompt, value in values.items()}


def prompt_values_model(directory: Path) -> dict[str, str] | None:
    """The record of the model whose answers the values average; None when none was saved."""
    if not (directory / VALUES_FILE).is_file():
        return None
    return _read(directory).get("model")


def covers(values: dict[str, float], prompts: Sequence[str]) -> bool:
    """Whether π_ref answered every one of `prompts` when the values were made."""
    return all(prompt in values for prompt in prompts)


def values_of(
    prompts: Sequence[str], values: dict[str, float], sources: Sequence[str]
) -> list[float]:
    """V(x) of each training record's rendered prompt, refused for a prompt π_ref did not
    answer when the values were made (the training data or the prompts' rendering changed
    since `alol value`), naming its record."""
    for prompt, source in zip(prompts, sources, strict=True):
        if prompt not in values:
            where = f" ({source})" if source else ""
            raise AlolError(
                f"a training prompt{where} has no per-prompt value: π_ref answered other "
                f"prompts when the values were made ({prompt[-120:]!r} is not among them). Run "
                "`alol value` again with this config, or `alol run`."
            )
    return [values[prompt] for prompt in prompts]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _read(directory: Path) -> dict:
    path = directory / VALUES_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise AlolError(_corrupt_message(path, error)) from error
    if not isinstance(saved, dict):
        raise AlolError(_corrupt_message(path, "not a JSON object"))
    return saved


def _corrupt_message(path: Path, error: object) -> str:
    return (
        f"{path} is corrupt ({error}). Delete it and rerun `alol value` to make the per-prompt "
        "values again."
    )
