"""Scoring records with a reward: batch by batch, with a progress bar, an optional timeout, the
weighted "total" added, and every failure turned into a `RewardError` that names the batch,
the record and the component."""

from __future__ import annotations

import math
import numbers
import threading
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from tqdm.auto import tqdm

from alol.data.formats.fields import warn_of_implausible_rewards
from alol.rewards.base import Reward, RewardError, check_count, weights_of


def score(
    reward: Reward,
    prompts: list[str],
    responses: list[str],
    batch_size: int = 32,
    show_progress: bool = True,
    timeout: float | None = None,
    record_numbers: Sequence[int] | None = None,
    record_sources: Sequence[str] | None = None,
) -> list[dict[str, float]]:
    """Score every record; each result holds every component plus "total", their weighted sum.

    timeout: seconds one batch may take. The batch then runs in a worker thread, which works on
        any platform but cannot be killed: a batch that times out keeps running in the
        background (a daemon thread, so it does not keep the process alive) while the error
        is raised.
    record_numbers: what errors call each record (default: its position here). A process that
        scores its share of the work passes the records' numbers in the whole of it, so an
        error names the same records whichever process hit it.
    record_sources: where each record came from ("train.jsonl:17"); errors then name the
        failing record by its file and line, and a failing batch by its first and last.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"score got {len(prompts)} prompts but {len(responses)} responses")
    numbers = list(range(len(responses))) if record_numbers is None else list(record_numbers)
    if len(numbers) != len(responses):
        raise ValueError(f"score got {len(numbers)} record numbers for {len(responses)} records")
    labels = [str(n) for n in numbers] if record_sources is None else list(record_sources)
    if len(labels) != len(responses):
        raise ValueError(f"score got {len(labels)} record sources for {len(responses)} records")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    name = getattr(reward, "name", type(reward).__name__)
    results: list[dict[str, float]] = []
    with tqdm(
        total=len(responses), desc=f"scoring ({name})", unit="record", disable=not show_progress
    ) as progress:
        for batch, start in enumerate(range(0, len(responses), batch_size)):
            stop = min(start + batch_size, len(responses))
            span = (
                _records(numbers[start:stop])
                if record_sources is None
                else _sources(labels[start:stop])
            )
            where = f"reward {name!r} on batch {batch} ({span})"
            outputs = _call_batch(
                reward, prompts[start:stop], responses[start:stop], timeout, where
            )
            check_count(outputs, stop - start, where)
            components, weights = _components_and_weights(reward, name)
            results.extend(
                with_total(output, labels[start + offset], components, weights, name)
                for offset, output in enumerate(outputs)
            )
            progress.update(stop - start)
    warn_of_implausible_rewards([r["total"] for r in results], labels, f"reward {name!r}")
    return results


def _records(numbers: list[int]) -> str:
    """'records 4-7' for consecutive numbers, else 'records 1, 3, 5, ...' (strided shares)."""
    if numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"records {numbers[0]}-{numbers[-1]}"
    shown = ", ".join(map(str, numbers[:8]))
    return f"records {shown}{', …' if len(numbers) > 8 else ''}"


def _sources(sources: list[str]) -> str:
    """'records train.jsonl:1 to train.jsonl:4', or the one record of a batch of one."""
    if len(sources) == 1:
        return f"record {sources[0]}"
    return f"records {sources[0]} to {sources[-1]}"


def _call_batch(reward: Reward, prompts, responses, timeout: float | None, where: str):
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["outputs"] = reward(prompts, responses)
        except Exception as error:
            outcome["error"] = error

    if timeout is None:
        run()
    else:
        worker = threading.Thread(target=run, name=f"alol-reward-{where}", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            raise RewardError(
                f"{where} did not finish within {timeout} s; its thread cannot be stopped and "
                "keeps running in the background. Raise the timeout or fix the slow reward"
            )
    if "error" in outcome:
        error = outcome["error"]
        raise RewardError(f"{where} raised {type(error).__name__}: {error}") from error
    return outcome["outputs"]


def _components_and_weights(reward: Reward, name: str) -> tuple[tuple[str, ...], dict[str, float]]:
    components = tuple(reward.components)
    if "total" in components:
        raise RewardError(
            f"reward {name!r} has a component named 'total', which score() reserves for the "
            "weighted sum; rename that component"
        )
    return components, weights_of(reward)


def with_total(
    output: Any, label: str, components: tuple[str, ...], weights: dict[str, float], name: str
) -> dict[str, float]:
    """One record's output checked (a dict of finite numbers, exactly `components`) and its
    weighted "total" added; errors name the reward and the record by `label`."""
    if not isinstance(output, Mapping):
        raise RewardError(
            f"reward {name!r} gave a {type(output).__name__} for record {label}; expected a dict "
            f"with the components {list(components)}"
        )
    unexpected = [key for key in output if key not in components]
    if unexpected:
        raise RewardError(
            f"reward {name!r} gave unexpected components {unexpected} for record {label}; "
            f"its components are {list(components)} (every record must have the same ones)"
        )
    record = {component: _finite(output, component, label, name) for component in components}
    record["total"] = sum(weights.get(c, 1.0) * value for c, value in record.items())
    return record


def _finite(output: Mapping, component: str, label: str, name: str) -> float:
    if component not in output:
        raise RewardError(f"reward {name!r} gave no component {component!r} for record {label}")
    value = output[component]
    if isinstance(value, numbers.Real) and math.isfinite(value):
        return float(value)
    raise RewardError(
        f"reward {name!r} gave {value!r} ({type(value).__name__}) for component {component!r} of "
        f"record {label}; rewards must be finite numbers"
    )


MISSING_EOS = "missing_eos"
"""The reward component `missing_eos_penalty` adds to the scores of decoded answers."""


def refuse_a_missing_eos_component(components: Collection[str]) -> None:
    """The penalty's component would overwrite a reward's own of the same name."""
    if MISSING_EOS in components:
        raise RewardError(
            f"the reward has a component named {MISSING_EOS!r}, the name missing_eos_penalty "
            "gives its own: rename the reward's component"
        )


def with_missing_eos_penalty(
    scores: Sequence[dict[str, float]], finished: Sequence[bool], penalty: float | None
) -> list[dict[str, float]]:
    """Each decoded answer's scores with −`penalty` for running to the token budget without
    ending, as a component of its own (0 for an answer that ended) and in the total: a reward
    that pays length would otherwise rank an answer cut mid-sentence above a complete one."""
    if penalty is None:
        return list(scores)
    refuse_a_missing_eos_component({name for row in scores for name in row})
    penalized = []
    for row, ended in zip(scores, finished, strict=True):
        cost = 0.0 if ended else -penalty
        penalized.append({**row, MISSING_EOS: cost, "total": row["total"] + cost})
    return penalized
