"""Decoding π_ref's samples for the value stage and scoring them as the evaluation will: the
reward less the missing-EOS penalty of a sample cut at the budget. (The eval stage caches its
answers and scores per model, in `alol.pipeline.answers`; validation during training decodes
one answer per prompt for several rewards, in `alol.train.selection`.)"""

from __future__ import annotations

from alol.config import PipelineConfig
from alol.models.generate import Answer, GenerationConfig, generate_answers
from alol.rewards import Reward, score, with_missing_eos_penalty


def decode_and_score(
    cfg: PipelineConfig,
    model,
    tokenizer,
    all_prompts: list[str],
    indices: list[int],
    reward: Reward,
    generation: GenerationConfig,
) -> list[list[tuple[Answer, dict[str, float]]]]:
    """Per prompt of `indices` (this process's share), its decoded answers paired with their
    scores. A reward error names records as numbered over every prompt's responses."""
    prompts = [all_prompts[i] for i in indices]
    responses = generate_answers(model, tokenizer, prompts, generation)
    flat_prompts = [p for p, rs in zip(prompts, responses, strict=True) for _ in rs]
    flat_answers = [r for rs in responses for r in rs]
    flat_responses = [answer.text for answer in flat_answers]
    numbers = [
        i * len(rs) + k for i, rs in zip(indices, responses, strict=True) for k in range(len(rs))
    ]
    scores = score(
        reward,
        flat_prompts,
        flat_responses,
        show_progress=False,  # the decoding bar covers the prompt; scoring is its tail
        timeout=cfg.reward_timeout,
        record_numbers=numbers,
    )
    finished = [answer.finished for answer in flat_answers]
    scores = with_missing_eos_penalty(scores, finished, cfg.missing_eos_penalty)
    scored = iter(zip(flat_answers, scores, strict=True))
    return [[next(scored) for _ in rs] for rs in responses]
