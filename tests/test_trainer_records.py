"""AlolTrainer takes a `datasets.Dataset` of records, as TRL's trainers do."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alol.config import PipelineConfig
from alol.data.examples import sequences_of
from alol.demo.tiny_models import build_tiny_model
from alol.errors import DataError
from alol.method.objectives import get_objective
from alol.models.logprobs import response_token_logprobs, sequence_logprobs
from alol.pipeline.inputs import load_tokenizer, stage_inputs, tokenize_with
from alol.pipeline.training_sets import training_set
from alol.train import AlolConfig, AlolTrainer
from alol.train.record_examples import examples_from_records

TOPICS = ["bread", "tea", "rain", "cats"]


def reward_rows(with_advantage: bool = False) -> list[dict]:
    rows = []
    for i, topic in enumerate(TOPICS):
        for response, reward in ((f" I am happy to help with {topic}.", 0.9), (" No.", 0.1)):
            row = {"prompt": f"Tell me about {topic}?", "response": response, "reward": reward}
            if with_advantage:
                row["advantage"] = reward - 0.5 + 0.01 * i  # A > 0 for the kind answers only
            rows.append(row)
    return rows


def args(tmp_path, objective: str, **options) -> AlolConfig:
    return AlolConfig(
        output_dir=str(tmp_path / "out"),
        objective=objective,
        max_steps=2,
        per_device_train_batch_size=2,
        max_prompt_length=16,
        max_response_length=12,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        **options,
    )


def test_a_dataset_of_reward_records_trains_weighted_sft(tmp_path, tiny_llama_dir):
    trainer = AlolTrainer(
        str(tiny_llama_dir),
        args(tmp_path, "wbc"),
        train_dataset=datasets.Dataset.from_list(reward_rows()),
    )
    trainer.train()

    assert len(trainer.train_dataset) == 8
    np.testing.assert_allclose(trainer.sample_weights, [0.9, 0.1] * 4, rtol=1e-6)
    assert trainer.state.global_step == 2


def test_a_lol_keeps_the_rows_with_positive_advantage_and_draws_them_by_it(
    tmp_path, tiny_llama_dir
):
    trainer = AlolTrainer(
        str(tiny_llama_dir),
        args(tmp_path, "a_lol"),
        train_dataset=datasets.Dataset.from_list(reward_rows(with_advantage=True)),
    )

    kept = trainer.train_dataset.examples
    assert [e.index for e in kept] == [0, 2, 4, 6]
    np.testing.assert_allclose(trainer.sample_weights, [0.4, 0.41, 0.42, 0.43], rtol=1e-6)
    assert all(e.ref_token_logps is not None for e in kept)
    trainer.train()


def test_sample_in_passes_draws_each_kept_row_once_in_a_pass(tmp_path, tiny_llama_dir):
    trainer = AlolTrainer(
        str(tiny_llama_dir),
        args(tmp_path, "a_lol", sample_in_passes=True, group_by_length=False),
        train_dataset=datasets.Dataset.from_list(reward_rows(with_advantage=True)),
    )

    draws = list(trainer._get_train_sampler())

    assert len(draws) == 4  # 2 steps of 2 over the 4 kept rows: one whole pass
    assert sorted(draws) == [0, 1, 2, 3]


def test_a_length_neutral_advantage_keeps_the_answers_that_beat_pi_ref_at_their_length(
    tmp_path, tiny_llama_dir
):
    """Answers of 1, 2, 3 and 4 words with A = 0.1 · words − 0.25 + q, q = [.05, −.05, −.05, .05]
    (q sums to 0 and does not correlate with length): the length-neutral A is q itself, so the
    shortest and the longest answer are kept, drawn alike; the paper's A keeps the longest only."""
    rows = [
        {
            "prompt": "Tell me about tea?",
            "response": " tea" * words,
            "reward": 0.5 + a,
            "advantage": a,
        }
        for words, a in zip((1, 2, 3, 4), (-0.1, -0.1, 0.0, 0.2), strict=True)
    ]

    def kept(**options) -> AlolTrainer:
        options = {"group_by_length": False, **options}
        return AlolTrainer(
            str(tiny_llama_dir),
            args(tmp_path, "a_lol", **options),
            train_dataset=datasets.Dataset.from_list(rows),
        )

    neutral, paper = kept(length_neutral_advantage=True), kept()

    assert [e.index for e in neutral.train_dataset.examples] == [0, 3]
    np.testing.assert_allclose(neutral.sample_weights, [0.05, 0.05], rtol=1e-6)
    assert [e.advantage for e in neutral.train_dataset.examples] == pytest.approx([0.05, 0.05])
    assert [e.index for e in paper.train_dataset.examples] == [3]
    np.testing.assert_allclose(paper.sample_weights, [0.2], rtol=1e-6)


def test_a_lol_without_advantages_names_the_field_and_where_they_come_from(
    tmp_path, tiny_llama_dir
):
    with pytest.raises(DataError, match=r"field 'advantage'.*alol advantage"):
        AlolTrainer(
            str(tiny_llama_dir),
            args(tmp_path, "a_lol"),
            train_dataset=datasets.Dataset.from_list(reward_rows()),
        )


def test_dpo_on_preference_rows_precomputes_the_references_log_probs(tmp_path, tiny_llama_dir):
    """The reference's summed log-probs equal those of the starting model on each sequence."""
    rows = [
        {"prompt": f"Tell me about {t}?", "chosen": f" Happy to help with {t}.", "rejected": " No."}
        for t in TOPICS
    ]
    trainer = AlolTrainer(
        str(tiny_llama_dir), args(tmp_path, "dpo"), train_dataset=datasets.Dataset.from_list(rows)
    )

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    batch = trainer.data_collator(trainer.train_dataset.examples[:1])
    with torch.no_grad():
        token_logps = response_token_logprobs(
            model, batch["input_ids"], batch["attention_mask"], batch["response_mask"]
        )
    chosen, rejected = sequence_logprobs(token_logps, batch["response_mask"]).tolist()
    assert batch["ref_chosen_logp"].item() == pytest.approx(chosen, abs=1e-4)
    assert batch["ref_rejected_logp"].item() == pytest.approx(rejected, abs=1e-4)
    trainer.train()


def test_a_bad_row_of_a_list_is_named_by_its_index(tmp_path, tiny_llama_dir):
    """(A list of dicts works like a Dataset; Arrow would refuse this mixed column itself.)"""
    rows = reward_rows()
    rows[3]["reward"] = "high"
    with pytest.raises(DataError, match=r"dataset:3: field 'reward': expected a number"):
        AlolTrainer(
            str(tiny_llama_dir),
            args(tmp_path, "wbc"),
            train_dataset=rows,
            processing_class=AutoTokenizer.from_pretrained(tiny_llama_dir),
        )


@pytest.mark.parametrize("objective", ["wbc", "dpo_ref_free", "pro"])
def test_records_given_to_the_trainer_make_the_examples_the_pipeline_makes(
    tmp_path, tiny_llama_dir, objective
):
    """One builder (`alol.data.objective_data`): the rows' stored rewards and the pipeline's
    advantage table (R from the data, V = 0 for wbc) give the same examples and weights."""
    rows = reward_rows()
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    cfg = PipelineConfig(
        reference=str(tiny_llama_dir),
        train_data=str(data),
        val_data=str(data),
        run_dir=str(tmp_path / "run"),
        max_prompt_length=16,
        max_response_length=12,
        batch_size=2,
    )
    tokenizer = load_tokenizer(tiny_llama_dir)
    training = training_set(stage_inputs(cfg), get_objective(objective))

    pipeline = training.build(tokenize_with(cfg, tokenizer))
    trainer, weights = examples_from_records(
        rows, get_objective(objective), None, tokenizer, args(tmp_path, objective)
    )

    assert [sequences_of(e) for e in trainer] == [sequences_of(e) for e in pipeline]
    assert weights == (None if training.weights is None else training.weights.tolist())


def first_step_importance_weight(tmp_path, tokenizer, **options) -> float:
    """a_lol's mean importance weight π_θ/π_ref over the first step, on a tiny GPT-2 (whose
    layers have dropout): π_θ is still π_ref there."""
    model = build_tiny_model(tokenizer, architecture="gpt2")
    assert model.config.resid_pdrop > 0, "GPT-2 has dropout to switch off"
    trainer = AlolTrainer(
        model,
        args(tmp_path, "a_lol", logging_steps=1, **options),
        train_dataset=datasets.Dataset.from_list(reward_rows(with_advantage=True)),
        processing_class=tokenizer,
    )
    trainer.train()
    first_step = next(row for row in trainer.state.log_history if "loss" in row)
    return first_step["importance_weight/mean"]


def test_the_policy_trains_without_its_dropout_so_its_first_importance_weight_is_one(
    tmp_path, tiny_tokenizer
):
    """π_ref's log-probs are taken without dropout; π_θ's in training mode must be too."""
    assert first_step_importance_weight(tmp_path, tiny_tokenizer) == pytest.approx(1.0, abs=1e-5)
    kept = first_step_importance_weight(tmp_path, tiny_tokenizer, disable_dropout=False)
    assert kept != pytest.approx(1.0, abs=1e-3), "the model's own dropout is noise in the weight"


def test_an_adapter_keeps_its_lora_dropout_while_the_model_loses_its_own(tmp_path, tiny_tokenizer):
    from peft import LoraConfig

    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.3, target_modules=["c_attn"])
    trainer = AlolTrainer(
        build_tiny_model(tiny_tokenizer, architecture="gpt2"),
        args(tmp_path, "nll"),
        processing_class=tiny_tokenizer,
        peft_config=lora,
    )

    kept = {m.p for m in trainer.model.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0}
    assert kept == {0.3}
