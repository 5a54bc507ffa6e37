"""KTO: the loss by hand, its labels and mismatched pairs, equal to TRL's KTOTrainer, and
`alol train --objective kto` on every data kind."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from conftest import ONE_PASS_EACH
from transformers import AutoModelForCausalLM, AutoTokenizer

from alol.cli import main
from alol.data.examples import ExampleDataset, UnpairedExample, kl_blocks, mismatched
from alol.data.records import PreferenceRecord, RankedRecord, RewardRecord
from alol.data.tokenize import TokenizedPair
from alol.errors import AlolError
from alol.method.batches import UnpairedBatch
from alol.method.kto import kto_loss, kto_rows
from alol.method.objectives import ObjectiveConfig
from alol.models.reference import sequence_logprobs_of_pairs
from alol.train import AlolConfig, AlolTrainer


def test_the_loss_follows_the_kto_formula():
    """β = 0.5, z0 = mean(kl − ref_kl) = mean(1, 3) = 2. Desirable row: log-ratio 4 − 1 = 3,
    loss 1.5 · (1 − σ(0.5 · (3 − 2))) = 1.5 · (1 − σ(0.5)). Undesirable row: log-ratio
    −2 − 0 = −2, loss 0.5 · (1 − σ(0.5 · (2 + 2))) = 0.5 · (1 − σ(2)). Mean of the two."""
    batch = UnpairedBatch(
        logps=torch.tensor([4.0, -2.0], requires_grad=True),
        kl_logps=torch.tensor([2.0, 3.0]),
        labels=torch.tensor([True, False]),
        ref_logps=torch.tensor([1.0, 0.0]),
        ref_kl_logps=torch.tensor([1.0, 0.0]),
    )
    config = ObjectiveConfig(beta=0.5, desirable_weight=1.5, undesirable_weight=0.5)

    output = kto_loss(batch, config)

    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = (1.5 * (1 - sigmoid(0.5)) + 0.5 * (1 - sigmoid(2.0))) / 2
    torch.testing.assert_close(output.loss, torch.tensor(expected))
    assert output.metrics["kl"] == 2.0
    torch.testing.assert_close(output.metrics["rewards/chosen"], torch.tensor(1.5))
    torch.testing.assert_close(output.metrics["rewards/rejected"], torch.tensor(-1.0))
    torch.testing.assert_close(output.metrics["rewards/margins"], torch.tensor(2.5))
    output.loss.backward()
    assert batch.logps.grad[0] < 0 < batch.logps.grad[1], "desirable up, undesirable down"


def test_the_kl_estimate_is_clamped_at_zero_and_a_missing_class_reports_nan():
    batch = UnpairedBatch(
        logps=torch.tensor([1.0, 2.0]),
        kl_logps=torch.tensor([-5.0, -5.0]),
        labels=torch.tensor([True, True]),
        ref_logps=torch.tensor([0.0, 0.0]),
        ref_kl_logps=torch.tensor([0.0, 0.0]),
    )
    output = kto_loss(batch, ObjectiveConfig())
    assert output.metrics["kl"] == 0.0
    assert output.metrics["rewards/rejected"].isnan() and output.metrics["rewards/margins"].isnan()


def test_each_example_is_paired_with_the_completion_before_it_in_its_batch():
    """TRL rotates a batch's completions by one: (x1, y4), (x2, y1), (x3, y2), (x4, y3)."""
    assert mismatched([10, 11, 12, 13]) == [13, 10, 11, 12]
    blocks = kl_blocks(10, 4, seed=0)
    assert [len(block) for block in blocks] == [4, 4, 4], "the last batch is filled up"
    assert sorted(set(i for block in blocks for i in block)) == list(range(10))
    assert kl_blocks(10, 4, seed=0) == blocks != kl_blocks(10, 4, seed=1)


def test_a_batch_of_one_cannot_form_mismatched_pairs():
    with pytest.raises(AlolError, match="batches of at least 2 examples"):
        kl_blocks(10, 1, seed=0)
    with pytest.raises(AlolError, match="at least one whole batch"):
        kl_blocks(3, 4, seed=0)


def test_labels_come_from_each_data_kind():
    rewards = [RewardRecord("p", f"r{i}", float(i)) for i in range(4)]
    assert [label for *_, label in kto_rows(rewards, "auto")] == [False, False, True, True]
    assert [label for *_, label in kto_rows(rewards, "reward_above", 0.5)] == [
        False, True, True, True,
    ]  # fmt: skip
    unpaired = [RewardRecord("p", "a", 1.0, label=True), RewardRecord("p", "b", 0.0, label=False)]
    assert [label for *_, label in kto_rows(unpaired, "auto")] == [True, False]
    pairs = [PreferenceRecord("p", "good", "bad"), PreferenceRecord("q", "fine", "poor")]
    assert kto_rows(pairs, "auto") == [
        ("p", "good", True), ("q", "fine", True), ("p", "bad", False), ("q", "poor", False),
    ]  # fmt: skip
    hh = [RankedRecord("p", ["worse", "better"], [0.2, 0.9])]
    assert kto_rows(hh, "auto") == [("p", "better", True), ("p", "worse", False)]
    assert [label for *_, label in kto_rows(rewards, "advantage_positive", None, np.array([-1, 1, -1, 1]))] == [
        False, True, False, True,
    ]  # fmt: skip


def test_one_class_only_is_refused_with_what_to_change():
    same = [RewardRecord("p", f"r{i}", 1.0) for i in range(4)]
    with pytest.raises(AlolError, match="all 4 are undesirable.*--kto-threshold"):
        kto_rows(same, "auto")


PROMPTS = ["Tell me about tea", "How do I bake bread", "Is it raining", "Play some music"]
COMPLETIONS = [" Tea is brewed from leaves.", " No.", " Rain falls from clouds.", " Go away."]
LABELS = [True, False, True, False]


def test_the_loss_and_its_gradients_equal_trls_kto_trainer(tmp_path, tiny_llama_dir):
    """The same batch, model and reference log-probs: TRL's KTOTrainer loss (its own
    tokenization, collator, KL completions and reference pass) and alol's kto loss through
    AlolTrainer agree to 1e-6, and so do the gradients of every parameter. (TRL's configs
    default to bf16, which its reference pass would then run in: both run float32 here.)"""
    trl = pytest.importorskip("trl")
    from datasets import Dataset

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    policy = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    reference = copy.deepcopy(policy)
    with torch.no_grad():  # a reference that differs, so the log-ratios are not all 0
        for parameter in reference.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    rows = [
        {"prompt": p, "completion": c, "label": label}
        for p, c, label in zip(PROMPTS, COMPLETIONS, LABELS, strict=True)
    ]
    settings = dict(beta=0.3, desirable_weight=1.2, undesirable_weight=0.7)
    trl_trainer = trl.KTOTrainer(
        model=copy.deepcopy(policy),
        ref_model=reference,
        args=trl.KTOConfig(
            output_dir=str(tmp_path / "trl"),
            per_device_train_batch_size=4,
            report_to="none",
            use_cpu=True,
            bf16=False,
            **settings,
        ),  # fmt: skip
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    processed = [trl_trainer.train_dataset[i] for i in range(4)]
    trl_batch = trl_trainer.data_collator(processed)
    trl_loss = trl_trainer._compute_loss(trl_trainer.model, trl_batch, return_outputs=False)

    completions = [TokenizedPair(r["prompt_ids"], r["completion_ids"]) for r in processed]
    pairs = [
        TokenizedPair(r["prompt_ids"], processed[j]["completion_ids"])
        for r, j in zip(processed, mismatched(range(4)), strict=True)
    ]
    assert [p.response_ids for p in pairs] == [r["KL_completion_ids"] for r in processed]
    ref_logps = sequence_logprobs_of_pairs(reference, completions, ONE_PASS_EACH)
    ref_pairs = sequence_logprobs_of_pairs(reference, pairs, ONE_PASS_EACH)
    examples = [
        UnpairedExample(c, p, r["label"], i, ref_logps[i], ref_pairs[i])
        for i, (c, p, r) in enumerate(zip(completions, pairs, processed, strict=True))
    ]
    alol_trainer = AlolTrainer(
        copy.deepcopy(policy),
        AlolConfig(
            output_dir=str(tmp_path / "alol"),
            objective="kto",
            per_device_train_batch_size=4,
            max_steps=1,
            report_to="none",
            **settings,
        ),  # fmt: skip
        train_dataset=ExampleDataset(examples, batch_size=4),
        processing_class=tokenizer,
    )
    alol_loss = alol_trainer.compute_loss(alol_trainer.model, alol_trainer.data_collator(examples))

    torch.testing.assert_close(alol_loss, trl_loss, rtol=0, atol=1e-6)
    trl_loss.backward()
    alol_loss.backward()
    trl_grads = dict(trl_trainer.model.named_parameters())
    for name, parameter in alol_trainer.model.named_parameters():
        torch.testing.assert_close(parameter.grad, trl_grads[name].grad, rtol=1e-5, atol=1e-6)


@pytest.fixture
def kto_workspace(tmp_path, tiny_llama_dir):
    topics = ["bread", "tea", "rain", "music", "books", "cats", "trees", "boats"]
    files = {
        "reward": [
            {"prompt": f"About {t}?", "response": response, "reward": reward}
            for t in topics
            for response, reward in ((f"I like {t}.", 1.0), ("No.", 0.2))
        ],
        "preference": [
            {"prompt": f"About {t}?", "chosen": f"I like {t}.", "rejected": "No."} for t in topics
        ],
        "unpaired": [
            {"prompt": f"About {t}?", "completion": completion, "label": label}
            for t in topics
            for completion, label in ((f"I like {t}.", True), ("No.", False))
        ],
    }
    paths = {}
    for kind, rows in files.items():
        paths[kind] = tmp_path / f"{kind}.jsonl"
        paths[kind].write_text("".join(json.dumps(row) + "\n" for row in rows))
    common = [
        "--reference", str(tiny_llama_dir), "--run-dir", str(tmp_path / "run"), "--max-steps", "3",
        "--batch-size", "4", "--max-prompt-length", "16", "--max-response-length", "8",
        "--val-fraction", "0.25", "--objective", "kto", "--logging-steps", "1",
    ]  # fmt: skip
    return paths, common, tmp_path / "run"


@pytest.mark.parametrize("kind", ["reward", "preference", "unpaired"])
def test_alol_train_kto_runs_on_each_data_kind(kto_workspace, kind):
    paths, common, run = kto_workspace
    assert main(["train", *common, "--train-data", str(paths[kind])]) == 0
    logged = [json.loads(line) for line in (run / "train/kto/metrics.jsonl").open()]
    assert any("rewards/chosen" in row and "kl" in row for row in logged)
    assert (run / "train/kto/final/config.json").exists()


def test_alol_train_kto_refuses_a_batch_of_one(kto_workspace, capsys):
    paths, common, _ = kto_workspace
    assert main(["train", *common, "--train-data", str(paths["reward"]), "--batch-size", "1"]) == 2
    assert "KTO needs batches of at least 2 examples" in capsys.readouterr().err
