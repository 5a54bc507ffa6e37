"""What each objective trains on, from the paper's HH files: the preferred response for SFT and
the pointwise objectives, both responses for DPO and PRO, PRO's gaps from the logits."""

from __future__ import annotations

import json
import math

import pytest
from transformers import AutoTokenizer

from alol.config import PipelineConfig
from alol.method.objectives import get_objective
from alol.pipeline.inputs import stage_inputs, tokenize_with
from alol.pipeline.training_sets import training_set

PROMPTS = ["How do I bake bread?", "Is tea good?", "Why is it raining?"]


@pytest.fixture
def hh_config(tmp_path, tiny_llama_dir) -> PipelineConfig:
    """Three HH records, each with a preferred (first) and a rejected answer and their logits."""
    rows = [
        {
            "prefix": [[f"<|prompter|>{prompt}", "<|assistant|>"]] * 2,
            "suffix": [f" A kind answer {i}.", f" Go away {i}."],
            "reward": [1.0 + i, -1.0],
            "sft_index": 0,
        }
        for i, prompt in enumerate(PROMPTS)
    ]
    data = tmp_path / "hh.json"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return PipelineConfig(
        reference=str(tiny_llama_dir),
        train_data=str(data),
        val_data=str(data),
        run_dir=str(tmp_path / "run"),
        max_prompt_length=32,
        max_response_length=16,
    )


def examples_of(cfg: PipelineConfig, objective: str, tokenizer):
    training = training_set(stage_inputs(cfg), get_objective(objective))
    return training.build(tokenize_with(cfg, tokenizer))


def responses_of(dataset, tokenizer) -> list[str]:
    return sorted(tokenizer.decode(e.pair.response_ids, skip_special_tokens=True) for e in dataset)


def test_sft_and_pointwise_objectives_train_on_the_preferred_response_only(hh_config):
    tokenizer = AutoTokenizer.from_pretrained(hh_config.reference)

    preferred = stage_inputs(hh_config).train_pairs
    nll = examples_of(hh_config, "nll", tokenizer)

    assert [r.response for r in preferred] == [f" A kind answer {i}." for i in range(3)]
    assert responses_of(nll, tokenizer) == sorted(r.response for r in preferred)


def test_every_response_is_trained_when_asked_for(hh_config):
    cfg = PipelineConfig(**{**hh_config.__dict__, "train_responses": "all"})
    tokenizer = AutoTokenizer.from_pretrained(cfg.reference)

    nll = examples_of(cfg, "nll", tokenizer)

    assert len(nll) == 6


def test_pro_ranks_both_responses_with_the_reward_models_logits(hh_config):
    """The loaded rewards are sigmoid(logit); PRO's temperatures are the logit gaps."""
    tokenizer = AutoTokenizer.from_pretrained(hh_config.reference)
    train = stage_inputs(hh_config).splits.train

    pro = examples_of(hh_config, "pro", tokenizer)

    assert [len(e.candidates) for e in pro] == [2, 2, 2]
    assert [e.rewards for e in pro] == [[1.0 + i, -1.0] for i in range(3)]
    assert train[0].rewards == pytest.approx([1 / (1 + math.exp(-1.0)), 1 / (1 + math.exp(1.0))])


def test_dpo_pairs_the_preferred_response_against_the_rejected_one(hh_config):
    tokenizer = AutoTokenizer.from_pretrained(hh_config.reference)
    pairs = examples_of(hh_config, "dpo_ref_free", tokenizer)

    chosen = [tokenizer.decode(e.chosen.response_ids, skip_special_tokens=True) for e in pairs]
    assert chosen == [f" A kind answer {i}." for i in range(3)]


def test_dpos_reference_log_probs_are_cached_as_reference_log_probs_not_advantages(hh_config):
    """Cached under a name of their own: the advantage stage's tables are `advantages-*`."""
    tokenizer = AutoTokenizer.from_pretrained(hh_config.reference)

    pairs = examples_of(hh_config, "dpo", tokenizer)

    assert all(e.ref_chosen_logp is not None for e in pairs)
    cached = sorted(p.name.split("-")[0] for p in (hh_config.root / "pairs").glob("*.safetensors"))
    assert cached == ["reference_logps"]
