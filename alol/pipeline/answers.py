"""One model's answers to the evaluation prompts, decoded once and kept, and what is computed
from them: their scores by any reward or judge, and their log-probs under π_ref.

Each piece is kept under a fingerprint of exactly what decides it: the answers under the
model, the prompts and the decoding; a reward's scores under the answers and that reward; the
log-probs under the answers and π_ref. So a judge added to a finished evaluation scores the
kept answers without decoding them again, and a retrained model decodes anew.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from alol.atomic import write_atomic, write_json
from alol.config import PipelineConfig
from alol.data.tokenize import TokenizedPair, encode_prompt
from alol.distributed import gather_in_order, on_main_process
from alol.fingerprint import fingerprint_model, fingerprint_of
from alol.models.generate import Answer as DecodedAnswer
from alol.models.generate import decodes_in_one_call, generate_answers, sharded_over_processes
from alol.models.reference import gather_by_prompt_group, sequence_logprobs_of_pairs
from alol.pipeline.inputs import load_policy_for_eval, render
from alol.pipeline.settings import (
    answers_reference_config,
    configured_reference_dtype,
    generation_config,
    tokenization,
)
from alol.pipeline.stage import begin_stage, finish_stage, stage_done
from alol.rewards import Reward, score
from alol.rewards.base import RewardError, weights_of

logger = logging.getLogger(__name__)
T = TypeVar("T")

ANSWERS_FILE = "answers.jsonl"


@dataclass
class Answer:
    """One decoded answer, as kept in `answers.jsonl`."""

    prompt: str
    """The prompt as the model saw it (rendered)."""
    response: str
    finished: bool
    """Whether it reached EOS before the token budget."""
    token_ids: list[int]
    """The generated tokens, EOS included when finished."""
    logp: float | None
    """log π_θ(y|x) of those tokens under the model that wrote them; None for π_ref's answers,
    whose log ratio to π_ref is 0 without a forward pass."""


@dataclass
class Answers:
    """A model's answers in prompt order, and the fingerprint of what decided them."""

    rows: list[Answer]
    fingerprint: str
    folder: Path

    @property
    def prompts(self) -> list[str]:
        return [row.prompt for row in self.rows]

    @property
    def responses(self) -> list[str]:
        return [row.response for row in self.rows]

    @property
    def finished(self) -> list[bool]:
        return [row.finished for row in self.rows]


def _unvouched_base(path: Path, base: Path | None) -> list[str]:
    """The fingerprint of the weights an adapter at `path` is merged into where nothing else
    vouches for them: with no `base` given, the folder its config names, which can be trained
    again in place after its answers were kept (the evaluation gives a `base`, this run's π_ref,
    only to a model recorded as trained from it). Empty for full weights, a given base, and a
    named base that is no longer there: answers kept before alol keyed them on it are read
    back, and decoding anew fails on the missing base as loading it would."""
    config = path / "adapter_config.json"
    if base is not None or not config.is_file():
        return []
    named = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    try:
        return [fingerprint_model(named)] if named else []
    except FileNotFoundError:
        return []


def decoded_answers(
    cfg: PipelineConfig,
    name: str,
    path: Path,
    prompts: list,
    on_render: Callable[[list[str], object], None] | None = None,
    with_logps: bool = True,
    base: Path | None = None,
) -> Answers:
    """The answers of the model at `path` to `prompts` (records' prompts), decoded now or read
    back from `run_dir/eval/<name>/` when the model, prompts and decoding are unchanged.
    `on_render(texts, tokenizer)` sees the rendered prompts before decoding; `with_logps`
    weighs each answer under the model: read off the decoding steps' logits, or by a forward
    pass where decoding is one call on one process (`weighed_by_a_forward_pass`). An adapter
    at `path` is merged into `base` where given (`load_policy_for_eval`)."""
    out = cfg.root / "eval" / name
    dtype = configured_reference_dtype(cfg)
    generation = generation_config(cfg)
    fingerprint = fingerprint_of(
        "answers",
        fingerprint_model(path),
        *_unvouched_base(path, base),
        prompts,
        generation.deciding_settings(),
        tokenization(cfg),
        dtype,
    )
    if stage_done(out, fingerprint) and (out / ANSWERS_FILE).is_file():
        logger.info("eval %s: answers up to date (%s)", name, out)
        return Answers(_read_answers(out / ANSWERS_FILE), fingerprint, out)
    begin_stage(out, fingerprint, "eval")
    model, tokenizer = load_policy_for_eval(path, dtype, base)
    texts = [render(cfg, p, tokenizer) for p in prompts]
    if on_render is not None:
        on_render(texts, tokenizer)

    # Not where weights are sharded over processes: there a forward pass on one process needs
    # one on every other, and each would weigh its own share's answers in its own count of
    # batches; the decoding steps' logits, gathered in step, are kept instead.
    weigh_by_a_pass = decodes_in_one_call(model) and not sharded_over_processes(model)

    def decode(indices: list[int]) -> list[Answer]:
        shard = [texts[i] for i in indices]
        from_steps = with_logps and not weigh_by_a_pass
        decoded = [
            a
            for (a,) in generate_answers(model, tokenizer, shard, generation, with_logps=from_steps)
        ]
        if with_logps and weigh_by_a_pass:
            decoded = weighed_by_a_forward_pass(model, tokenizer, shard, decoded, cfg)
        return [
            Answer(text, a.text, a.finished, list(a.token_ids), a.logp)
            for text, a in zip(shard, decoded, strict=True)
        ]

    rows = gather_in_order(len(texts), decode)
    on_main_process(lambda: _write_answers(out / ANSWERS_FILE, rows))
    finish_stage(out, fingerprint, "eval")
    return Answers(rows, fingerprint, out)


def weighed_by_a_forward_pass(
    model, tokenizer, texts: list[str], answers: list[DecodedAnswer], cfg: PipelineConfig
) -> list[DecodedAnswer]:
    """`answers` (to the rendered prompts `texts`) with their log-probs under `model` from a
    teacher-forced pass, in batches of `precompute_batch_size` as π_ref weighs them. For a model
    that decodes in one call, where the decoding steps' logits would all be kept to its end:
    the whole budget's rows × vocabulary floats, which a pass over whole answers would not hold."""
    pairs = [
        TokenizedPair(encode_prompt(tokenizer, text, cfg.max_prompt_length), list(a.token_ids))
        for text, a in zip(texts, answers, strict=True)
    ]
    logps = sequence_logprobs_of_pairs(model, pairs, answers_reference_config(cfg))
    return [a._replace(logp=logp) for a, logp in zip(answers, logps, strict=True)]


def answer_scores(
    answers: Answers,
    reward: Reward,
    reward_fingerprint: str | None,
    label: str,
    cfg: PipelineConfig,
) -> list[dict[str, float]]:
    """`reward`'s score dicts (components and "total") of each answer, kept in
    `<answers' folder>/scores/`."""
    key = fingerprint_of("scores", reward_fingerprint, answers.fingerprint)
    return cached_json(
        answers.folder / "scores" / f"{label}-{key[:16]}.json",
        lambda: scores_of(reward, answers.prompts, answers.responses, cfg),
    )


def scores_of(
    reward: Reward, prompts: list[str], responses: list[str], cfg: PipelineConfig
) -> list[dict[str, float]]:
    """Score (prompt, response) pairs, each process its share; errors name the pair's number."""
    return gather_in_order(
        len(prompts),
        lambda indices: score(
            reward,
            [prompts[i] for i in indices],
            [responses[i] for i in indices],
            show_progress=False,
            timeout=cfg.reward_timeout,
            record_numbers=indices,
        ),
    )


def stock_answer_scores(
    folder: Path,
    text: str,
    prompts: list[str],
    reward: Reward,
    reward_fingerprint: str | None,
    cfg: PipelineConfig,
) -> list[dict[str, float]]:
    """`reward`'s scores of one stock answer, `text`, given to every prompt, kept in `folder`:
    the evaluation's constant answers and the value stage's probes are scored this way."""
    key = fingerprint_of("stock answer", text, prompts, reward_fingerprint)
    return cached_json(
        folder / f"{key[:16]}.json",
        lambda: scores_of(reward, prompts, [text] * len(prompts), cfg),
    )


def reference_logps_path(answers: Answers, reference_fingerprint: str) -> Path:
    key = fingerprint_of("reference logps", reference_fingerprint, answers.fingerprint)
    return answers.folder / f"reference_logps-{key[:16]}.json"


def reference_logps(
    answers_by_name: dict[str, Answers],
    reference_fingerprint: str,
    load_reference: Callable[[], tuple[Any, Any]],
    cfg: PipelineConfig,
) -> dict[str, list[float]]:
    """log π_ref(y|x) of each model's answers (their generated tokens), kept beside them. Those
    not kept yet are weighed in one pass, π_ref (`load_reference()`, loaded only then) running
    each prompt once for every model's answer to it (`share_prompts`)."""
    paths = {
        name: reference_logps_path(answers, reference_fingerprint)
        for name, answers in answers_by_name.items()
    }
    missing = [name for name, path in paths.items() if not path.is_file()]
    weighed = _weigh_under_reference([answers_by_name[n] for n in missing], load_reference, cfg)
    logps = dict(zip(missing, weighed, strict=True))

    def keep_weighed() -> None:
        for name in missing:
            write_json(paths[name], logps[name])

    on_main_process(keep_weighed)
    return {
        name: logps[name] if name in logps else json.loads(path.read_text(encoding="utf-8"))
        for name, path in paths.items()
    }


def _weigh_under_reference(
    models_answers: list[Answers],
    load_reference: Callable[[], tuple[Any, Any]],
    cfg: PipelineConfig,
) -> list[list[float]]:
    """Each model's answers' log-probs under π_ref, from one pass over all of them."""
    if not models_answers:
        return []
    model, tokenizer = load_reference()
    rows = [row for answers in models_answers for row in answers.rows]
    pairs = [
        TokenizedPair(encode_prompt(tokenizer, row.prompt, cfg.max_prompt_length), row.token_ids)
        for row in rows
    ]
    config = answers_reference_config(cfg)
    logps = iter(
        gather_by_prompt_group(
            [row.prompt for row in rows],
            config.share_prompts,
            lambda indices: sequence_logprobs_of_pairs(model, [pairs[i] for i in indices], config),
        )
    )
    return [[next(logps) for _ in answers.rows] for answers in models_answers]


def cached_json(path: Path, compute: Callable[[], T]) -> T:
    """The JSON at `path`, or `compute()` written there (by the main process, atomically)."""
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    value = compute()
    on_main_process(lambda: write_json(path, value))
    return value


def _write_answers(path: Path, rows: list[Answer]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(asdict(row), ensure_ascii=False) + "\n")

    write_atomic(path, write)


def _read_answers(path: Path) -> list[Answer]:
    with open(path, encoding="utf-8") as handle:
        return [Answer(**json.loads(line)) for line in handle if line.strip()]


def component_weights(reward: Reward, prompt: str, response: str) -> dict[str, float]:
    """Each component's weight in the reward's total. A reward whose scores all came from a
    cache has not been called in this process, so it learns its components from one answer."""
    try:
        return weights_of(reward)
    except RewardError:
        reward([prompt], [response])
        return weights_of(reward)
