"""How a global batch is split must not change training; precomputed references must be exact.

Batch 1 x accumulation 8 and batch 8 x accumulation 1 train on the same 8 examples per
optimizer step (the sampler groups whole global batches), every loss is a per-example mean, and
Trainer divides each micro-batch loss by the accumulation steps, so the summed gradient is the
same mean: the logged losses and the final weights agree up to float rounding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import constant_value_head
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from alol.config import PipelineConfig
from alol.method.objectives import get_objective
from alol.models.logprobs import response_token_logprobs, sequence_logprobs
from alol.pipeline.inputs import stage_inputs, tokenize_with
from alol.pipeline.training_sets import training_set as build_training_set
from alol.train import AlolConfig, AlolTrainer

STEPS = 2
METRICS = {
    "a_lol": ("loss", "importance_weight/mean", "advantage/mean"),
    "dpo": ("loss", "rewards/margins", "rewards/accuracies"),
}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_llama_dir) -> PipelineConfig:
    """Reward records with several responses per prompt, so they also make preference pairs;
    a value head that predicts 0, so A = R."""
    directory = tmp_path_factory.mktemp("invariance")
    constant_value_head(directory / "run", tiny_llama_dir)
    rows = [
        {"prompt": f"Tell me about {topic}?", "response": response, "reward": reward}
        for topic in ("bread", "tea", "rain", "music", "cats", "boats")
        for response, reward in (
            (f"I am happy to help with {topic}, it is great.", 0.9),
            (f"No. {topic}.", 0.2),
        )
    ]
    data = directory / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return PipelineConfig(
        reference=str(tiny_llama_dir),
        train_data=str(data),
        val_data=str(data),
        run_dir=str(directory / "run"),
        max_prompt_length=16,
        max_response_length=12,
        precompute_batch_size=5,  # the precompute batches differ from the training batches
        batch_size=4,  # KTO forms its batches (and their mismatched pairs) at this size
    )


def training_set(pipeline: PipelineConfig, objective: str):
    tokenizer = AutoTokenizer.from_pretrained(pipeline.reference)
    training = build_training_set(stage_inputs(pipeline), get_objective(objective))
    dataset, weights = training.build(tokenize_with(pipeline, tokenizer)), training.weights
    return dataset, weights, tokenizer


def make_trainer(
    pipeline: PipelineConfig,
    objective: str,
    output: Path,
    batch: int,
    accumulation: int,
    **options: Any,
) -> AlolTrainer:
    """A trainer on the fixture's data; `options` override or add AlolConfig fields."""
    dataset, weights, tokenizer = training_set(pipeline, objective)
    settings = dict(
        output_dir=str(output),
        objective=objective,
        max_steps=STEPS,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    args = AlolConfig(**{**settings, **options})
    return AlolTrainer(
        AutoModelForCausalLM.from_pretrained(pipeline.reference),
        args,
        train_dataset=dataset,
        processing_class=tokenizer,
        sample_weights=None if weights is None else weights.tolist(),
    )


def logged(trainer: AlolTrainer, names: tuple[str, ...]) -> dict[str, list[float]]:
    steps = [row for row in trainer.state.log_history if "loss" in row]
    assert len(steps) == STEPS
    return {name: [row[name] for row in steps] for name in names}


@pytest.mark.parametrize("objective", ["a_lol", "dpo"])
def test_batch_1_with_8_accumulation_steps_trains_like_batch_8(tmp_path, pipeline, objective):
    split = make_trainer(pipeline, objective, tmp_path / "split", batch=1, accumulation=8)
    whole = make_trainer(pipeline, objective, tmp_path / "whole", batch=8, accumulation=1)
    split.train()
    whole.train()

    split_logs, whole_logs = logged(split, METRICS[objective]), logged(whole, METRICS[objective])
    for name in METRICS[objective]:
        assert split_logs[name] == pytest.approx(whole_logs[name], rel=1e-4, abs=1e-6), name
    start = AutoModelForCausalLM.from_pretrained(pipeline.reference).state_dict()
    split_weights, whole_weights = split.model.state_dict(), whole.model.state_dict()
    assert any(not torch.equal(whole_weights[n], start[n]) for n in start), "weights moved"
    for name, tensor in whole_weights.items():
        torch.testing.assert_close(split_weights[name], tensor, rtol=1e-4, atol=1e-6)


def live_reference(pipeline: PipelineConfig, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(pipeline.reference).eval()
    with torch.no_grad():
        return response_token_logprobs(
            model, batch["input_ids"], batch["attention_mask"], batch["response_mask"]
        )


def training_batches(pipeline: PipelineConfig, objective: str, tmp_path: Path):
    trainer = make_trainer(pipeline, objective, tmp_path, batch=4, accumulation=1)
    return list(trainer.get_train_dataloader())


def test_precomputed_reference_token_logprobs_equal_a_live_reference_on_training_batches(
    tmp_path, pipeline
):
    for batch in training_batches(pipeline, "a_lol", tmp_path):
        live = live_reference(pipeline, batch)
        assert batch["response_mask"].any()
        torch.testing.assert_close(batch["ref_token_logps"], live)


def test_precomputed_reference_pair_logprobs_equal_a_live_reference_on_training_batches(
    tmp_path, pipeline
):
    for batch in training_batches(pipeline, "dpo", tmp_path):
        live = sequence_logprobs(live_reference(pipeline, batch), batch["response_mask"])
        chosen, rejected = live.chunk(2)
        torch.testing.assert_close(batch["ref_chosen_logp"], chosen)
        torch.testing.assert_close(batch["ref_rejected_logp"], rejected)


def test_lora_adapters_start_from_the_seed_whatever_ran_before(tmp_path, tiny_llama_dir):
    """Objectives trained one after another in one process (the pipeline, the demo) start from
    the same adapters, so listing another objective first cannot change a result."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    rows = [{"prompt": "Say hi.", "response": " hi!", "reward": 1.0}] * 2

    def initial_adapters() -> dict[str, torch.Tensor]:
        args = AlolConfig(output_dir=str(tmp_path), objective="nll", report_to="none")
        model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
        lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
        trainer = AlolTrainer(model, args, rows, tokenizer, peft_config=lora)
        return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_A" in n}

    first = initial_adapters()
    torch.rand(1000)  # whatever ran in between drew random numbers
    second = initial_adapters()

    assert first and all(torch.equal(first[name], second[name]) for name in first)
