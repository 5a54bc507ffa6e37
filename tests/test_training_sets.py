"""What each objective trains on, from the paper's HH files: the preferred response for SFT and
the pointwise objectives, both responses for DPO and PRO, PRO's gaps from the logits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from alol.config import PipelineConfig
from alol.data.formats import load_records
from alol.errors import DataError
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


def grouped_config(hh_config, groups: list[str | None], **settings) -> PipelineConfig:
    """The HH records again, each with the group given (None: no 'group' field)."""
    path = hh_config.train_data
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]
    for row, group in zip(rows, groups, strict=True):
        if group is not None:
            row["group"] = group
    grouped = path.replace(".json", "_grouped.json")
    Path(grouped).write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return PipelineConfig(**{**hh_config.__dict__, "train_data": grouped, **settings})


def test_balanced_draws_give_each_group_its_share_of_the_data_and_keep_the_ratios_within(
    hh_config,
):
    """Rewards σ(1), σ(2), σ(3); the first two answers are 'helpful' (2/3 of the data), the
    third 'harmless' (1/3). Drawn ∝ R, balanced: helpful's two weights keep their ratio and
    sum to 2/3, harmless's is 1/3 — where ∝ R alone would give it σ(3) / Σσ ≈ 0.39."""
    cfg = grouped_config(
        hh_config, ["helpful", "helpful", "harmless"], sampling="reward", balance_groups=True
    )
    sigmoid = [1 / (1 + math.exp(-logit)) for logit in (1.0, 2.0, 3.0)]

    balanced = training_set(stage_inputs(cfg), get_objective("wbc"))
    plain = training_set(
        stage_inputs(PipelineConfig(**{**cfg.__dict__, "balance_groups": False})),
        get_objective("wbc"),
    )

    helpful = sigmoid[0] + sigmoid[1]
    expected = [sigmoid[0] / helpful * 2 / 3, sigmoid[1] / helpful * 2 / 3, 1 / 3]
    assert balanced.weights.tolist() == pytest.approx(expected)
    assert plain.weights.tolist() == pytest.approx(sigmoid)
    assert balanced.fingerprint != plain.fingerprint


def test_relabelled_groups_make_a_balanced_training_set_anew(hh_config):
    """The groups decide a balanced set's weights, so a fixed label retrains the objective."""
    before = grouped_config(
        hh_config, ["helpful", "helpful", "harmless"], sampling="reward", balance_groups=True
    )
    first = training_set(stage_inputs(before), get_objective("wbc"))
    after = grouped_config(
        hh_config, ["helpful", "harmless", "harmless"], sampling="reward", balance_groups=True
    )

    relabelled = training_set(stage_inputs(after), get_objective("wbc"))

    assert relabelled.weights.tolist() != pytest.approx(first.weights.tolist())
    assert relabelled.fingerprint != first.fingerprint


def test_groups_travel_with_the_records_through_loading_and_conversion(hh_config):
    cfg = grouped_config(hh_config, ["helpful", "helpful", "harmless"], train_responses="all")

    pointwise = stage_inputs(cfg).train_pairs

    assert [r.group for r in pointwise] == ["helpful"] * 4 + ["harmless"] * 2


def test_balancing_a_record_without_a_group_is_refused_naming_its_line(hh_config):
    cfg = grouped_config(hh_config, ["helpful", None, "harmless"], balance_groups=True)

    with pytest.raises(DataError, match=r"_grouped\.json:2: field 'group': .*balance_groups"):
        training_set(stage_inputs(cfg), get_objective("wbc"))


def test_a_group_must_name_its_source_with_a_string_or_a_number(hh_config):
    cfg = grouped_config(hh_config, ["helpful", "helpful", "harmless"])
    Path(cfg.train_data).write_text(
        Path(cfg.train_data).read_text().replace('"harmless"', "true"), encoding="utf-8"
    )

    with pytest.raises(DataError, match=r"_grouped\.json:3: field 'group': expected a non-empty"):
        load_records(cfg.train_data)
