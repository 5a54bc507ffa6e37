"""Padding-free packing: a micro-batch as one row with restarting positions and a block-causal
mask gives the padded pass's log-probs, objectives and gradients, for Llama, Qwen2 and GPT-2."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from alol.data.collate import collate_pairs, pack_pairs
from alol.data.tokenize import tokenize_pair
from alol.demo.tiny_models import build_tiny_model
from alol.models.logprobs import (
    packed_attention_mask,
    packed_response_token_logprobs,
    response_token_logprobs,
)
from tests.test_invariance import logged, make_trainer, pipeline  # noqa: F401, F811

TEXTS = [
    ("The quick brown fox", " jumps over the lazy dog."),
    ("Human: How do I bake bread?", " Mix flour."),
    ("Please be kind and helpful,", " never rude or harmful, and happy to help you."),
]


def models(tiny_llama_dir, tiny_tokenizer_dir) -> dict[str, torch.nn.Module]:
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    torch.manual_seed(0)
    qwen = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        )
    )  # fmt: skip
    gpt2 = build_tiny_model(tokenizer, architecture="gpt2")
    return {
        "llama": AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
        "qwen2": qwen,
        "gpt2": gpt2,
    }


def batches(tokenizer):
    pairs = [tokenize_pair(tokenizer, p, r, 16, 12) for p, r in TEXTS]
    batch = collate_pairs(pairs, tokenizer.pad_token_id)
    return batch, pack_pairs(pairs, batch["response_positions"])


def padded_and_packed(model, batch, packed):
    padded = response_token_logprobs(
        model, batch["input_ids"], batch["attention_mask"], batch["response_mask"],
        response_positions=batch["response_positions"], right_padded=True,
    )  # fmt: skip
    return padded, packed_response_token_logprobs(
        model,
        packed["packed_input_ids"],
        packed["packed_position_ids"],
        packed["packed_response_columns"],
        batch["response_positions"],
        batch["response_mask"].shape,
    )


@pytest.mark.parametrize("architecture", ["llama", "qwen2", "gpt2"])
def test_packed_log_probs_equal_the_padded_ones(architecture, tiny_llama_dir, tiny_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    model = models(tiny_llama_dir, tiny_tokenizer_dir)[architecture]
    batch, packed = batches(tokenizer)
    assert packed["packed_input_ids"].shape[1] == int(batch["attention_mask"].sum())  # no padding

    padded, packed_logps = padded_and_packed(model.eval(), batch, packed)

    torch.testing.assert_close(packed_logps, padded, rtol=0, atol=1e-5)


def test_packed_gradients_equal_the_padded_ones(tiny_llama_dir, tiny_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    batch, packed = batches(tokenizer)

    grads = []
    for logps in padded_and_packed(model, batch, packed):
        model.zero_grad()
        logps.sum().backward(retain_graph=True)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})

    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_sequences_in_one_row_never_attend_to_each_other(tiny_llama_dir):
    """Two sequences of 2 and 3 tokens: a 5 × 5 mask, block-diagonal and causal."""
    from alol.data.tokenize import TokenizedPair

    pairs = [TokenizedPair([1], [2]), TokenizedPair([3, 4], [5])]
    packed = pack_pairs(pairs, torch.tensor([[0, 1], [1, 2]]))
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)

    allowed = packed_attention_mask(model, packed["packed_position_ids"])[0, 0] == 0
    expected = torch.tensor(
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]],
        dtype=torch.bool,
    )
    torch.testing.assert_close(allowed, expected)
    assert packed["packed_position_ids"].tolist() == [[0, 1, 0, 1, 2]]
    assert packed["packed_response_columns"].tolist() == [1, 4]


@pytest.mark.parametrize(
    "implementation", ["flex_attention", "flash_attention_2", "kernels-community/flash-attn"]
)
def test_attention_that_reads_sequence_boundaries_from_positions_gets_no_dense_mask(
    implementation, tiny_llama_dir
):
    """Their kernels skip the cross-sequence blocks (their equality with the padded pass is
    checked on a GPU by bench/device_checks.sh: flex attention has no backward on a CPU)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    model.config._attn_implementation = implementation
    assert packed_attention_mask(model, torch.tensor([[0, 1, 0, 1, 2]])) is None


@pytest.mark.parametrize("objective", ["a_lol", "dpo"])
def test_packed_training_logs_the_losses_of_padded_training(objective, pipeline, tmp_path):  # noqa: F811
    """The trainer with `packing` computes the same objective on the same draws."""

    runs = {}
    for packing in (False, True):
        trainer = make_trainer(pipeline, objective, tmp_path / str(packing), 2, 1, packing=packing)
        trainer.train()
        runs[packing] = logged(trainer, ("loss",))["loss"]

    torch.testing.assert_close(runs[True], runs[False], rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flex attention has no backward on a CPU")
def test_packed_flex_attention_equals_the_padded_pass_on_a_gpu(tiny_llama_dir, tiny_tokenizer_dir):
    """Flex attention finds the sequences in the position ids itself (no dense mask)."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).cuda()
    batch, packed = batches(tokenizer)
    batch = {k: v.cuda() for k, v in batch.items()}
    packed = {k: v.cuda() for k, v in packed.items()}
    padded, _ = padded_and_packed(model, batch, packed)
    model.set_attn_implementation("flex_attention")
    _, flex = padded_and_packed(model, batch, packed)
    torch.testing.assert_close(flex, padded, rtol=0, atol=1e-4)
    flex.sum().backward()  # and it trains
