"""SmolLM2-135M-Instruct's own sampled answers to the demo's HH prompts: the logged answers of a
deployed assistant; `alol demo --model smollm2` learns from those that ended with EOS.

    python -m alol.demo.smollm2_answers    # rewrites assets/smollm2_answers.jsonl (minutes, CPU)

Why these: its samples vary widely (some on topic and kind, some off), and the ones that beat
its expected reward (A > 0) are answers it can learn without leaving its own style. HH's human
answers, written by another assistant, are no better under the demo's reward, and learned
beside these they made A-LoL's answers short and evasive (`alol.demo.smollm2.training_answers`).
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alol.atomic import write_text
from alol.data.formats import load_records
from alol.data.tokenize import render_prompt
from alol.demo.smollm2 import HH_ASSET, SMOL_ANSWERS_ASSET, convert_smollm2, with_system_turn
from alol.models.generate import GenerationConfig, generate_answers

SAMPLING_SEEDS = (0, 1)
"""Each seed draws two answers per prompt; a seed added later adds answers and leaves the
earlier seeds' answers as they were."""
DECODING = GenerationConfig(
    max_new_tokens=96, do_sample=True, temperature=1.0, top_p=0.95,
    num_return_sequences=2, batch_size=16, max_prompt_length=128,
)  # fmt: skip


def sample_answers(model_dir: Path, seeds: tuple[int, ...]) -> list[dict]:
    """alol reward records (prompt, response; `finished`: it ended with EOS) of every non-empty
    answer sampled with each of `seeds` in turn, the prompt as the model saw it: the HH file's
    messages after the demo's system turn."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    prompts = [with_system_turn(record.prompt) for record in load_records(HH_ASSET).records]
    rendered = [render_prompt(prompt, tokenizer) for prompt in prompts]
    return [
        {"prompt": prompt, "response": answer.text, "finished": answer.finished}
        for seed in seeds
        for prompt, samples in zip(
            prompts,
            generate_answers(model, tokenizer, rendered, replace(DECODING, seed=seed)),
            strict=True,
        )
        for answer in samples
        if answer.text.strip()  # an empty answer is no training record
    ]


def main() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        lines = sample_answers(convert_smollm2(Path(scratch) / "base"), SAMPLING_SEEDS)
    write_text(SMOL_ANSWERS_ASSET, "".join(json.dumps(line) + "\n" for line in lines))
    finished = sum(line["finished"] for line in lines)
    print(f"{len(lines)} answers ({finished} ended with EOS) in {SMOL_ANSWERS_ASSET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
