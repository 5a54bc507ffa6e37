"""Response-token log-probs: the fast path equals the model's own full-logits forward.

The fast path runs the decoder body, gathers the hidden states that predict response tokens,
and applies the LM head (optionally vocabulary-chunked with a recomputing backward) to those
alone. Every test compares it against `naive_response_token_logprobs`, which goes through
`model(...)`, computes all `[B, L, V]` logits, log-softmaxes and gathers.
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, PromptTuningConfig, get_peft_model
from torch.testing import assert_close
from transformers import (
    AutoModelForCausalLM,
    CohereConfig,
    CohereForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    GraniteConfig,
    GraniteForCausalLM,
)

from alol.models.logprobs import (
    LogitTransform,
    chunked_token_logprobs,
    naive_response_token_logprobs,
    position_ids_from_attention_mask,
    response_token_logprobs,
    response_token_logprobs_and_hidden_states,
    sequence_logprobs,
    token_logprobs_from_hidden_states,
)

VOCAB_CHUNK = 7  # does not divide the tiny vocabulary of 300, so the last slice is short
FP32 = {"atol": 1e-5, "rtol": 1e-5}

# (prompt ids, response ids); rows of 8, 5 and 11 tokens, so padding differs per row.
PAIRS = [
    ([11, 12, 13, 14, 15], [21, 22, 23]),
    ([31, 32], [41, 42, 2]),
    ([51, 52, 53, 54, 55, 56, 57], [61, 62, 63, 2]),
]


def collate(pairs, padding_side: str, pad_id: int = 0) -> dict[str, torch.Tensor]:
    """The batch layout alol.data.collate produces: prompt, then response, padded on one side."""
    length = max(len(p) + len(r) for p, r in pairs)
    input_ids = torch.full((len(pairs), length), pad_id)
    attention_mask = torch.zeros(len(pairs), length, dtype=torch.long)
    response_mask = torch.zeros(len(pairs), length, dtype=torch.bool)
    for row, (prompt, response) in enumerate(pairs):
        n = len(prompt) + len(response)
        start = length - n if padding_side == "left" else 0
        input_ids[row, start : start + n] = torch.tensor(prompt + response)
        attention_mask[row, start : start + n] = 1
        response_mask[row, start + len(prompt) : start + n] = True
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "response_mask": response_mask,
    }


def both_paths(model, batch, vocab_chunk_size=None):
    fast = response_token_logprobs(model, **batch, vocab_chunk_size=vocab_chunk_size)
    naive = naive_response_token_logprobs(model, **batch)
    return fast, naive


def parameter_grads(model, token_logps_fn, batch) -> dict[str, torch.Tensor]:
    """Gradients of a loss that weights every response token differently, so a gradient routed
    to the wrong position or token cannot cancel out."""
    model.zero_grad(set_to_none=True)
    token_logps = token_logps_fn(model, batch)
    weights = torch.linspace(0.5, 1.5, token_logps.numel()).view_as(token_logps)
    (token_logps * weights).sum().backward()
    return {
        name: param.grad.clone()
        for name, param in model.named_parameters()
        if param.grad is not None
    }


def lora_model(base, target_modules="all-linear"):
    """LoRA with random (nonzero) B matrices, so the adapter really changes the outputs."""
    config = LoraConfig(r=4, lora_alpha=8, target_modules=target_modules, init_lora_weights=False)
    return get_peft_model(base, config).eval()


@pytest.mark.parametrize("vocab_chunk_size", [None, VOCAB_CHUNK])
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_equals_full_logits_computation(tiny_model, padding_side, vocab_chunk_size):
    batch = collate(PAIRS, padding_side)
    fast, naive = both_paths(tiny_model, batch, vocab_chunk_size)
    assert fast.dtype == torch.float32 and fast.shape == batch["input_ids"].shape
    assert_close(fast, naive, **FP32)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_padded_rows_equal_each_row_computed_alone(tiny_model, padding_side):
    """Left padding shifts a row's tokens right; positions counted from the attention mask make
    the row see exactly what it sees unpadded (GPT-2's absolute positions would show it)."""
    padded = response_token_logprobs(tiny_model, **collate(PAIRS, padding_side))
    for row, pair in enumerate(PAIRS):
        alone = response_token_logprobs(tiny_model, **collate([pair], padding_side))
        real = collate(PAIRS, padding_side)["attention_mask"][row].bool()
        assert_close(padded[row, real], alone[0], **FP32)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_the_hidden_states_returned_are_the_models_last_layer_states(tiny_model, padding_side):
    """The states the log-probs came from (which the precompute reuses for V(x)) equal the last
    entry of the model's own `output_hidden_states` on every real token."""
    batch = collate(PAIRS, padding_side)
    token_logps, hidden = response_token_logprobs_and_hidden_states(tiny_model, **batch)
    own = tiny_model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=position_ids_from_attention_mask(batch["attention_mask"]),
        output_hidden_states=True,
    ).hidden_states[-1]
    real = batch["attention_mask"].bool()
    assert hidden.shape == (*batch["input_ids"].shape, tiny_model.config.hidden_size)
    assert_close(hidden[real], own[real], **FP32)
    assert_close(token_logps, response_token_logprobs(tiny_model, **batch))


def test_only_response_positions_are_nonzero_and_sequence_logprob_sums_them(tiny_model):
    batch = collate(PAIRS, "right")
    token_logps = response_token_logprobs(tiny_model, **batch)
    assert (token_logps[~batch["response_mask"]] == 0).all()
    assert (token_logps[batch["response_mask"]] < 0).all()
    # Row 0 is 5 prompt tokens then 3 response tokens: log pi(y|x) = sum of positions 5, 6, 7.
    assert_close(
        sequence_logprobs(token_logps, batch["response_mask"])[0], token_logps[0, 5:8].sum()
    )


@pytest.mark.parametrize("vocab_chunk_size", [None, VOCAB_CHUNK])
def test_log_probs_from_any_predicting_states_are_the_heads_log_softmax(
    tiny_model, vocab_chunk_size
):
    """The one LM-head path also serves states no `response_token_logprobs` pass made (the
    precompute's shared-prompt forward): log_softmax(lm_head(h))[target], in float32."""
    torch.manual_seed(0)
    hidden = torch.randn(4, tiny_model.config.hidden_size)
    targets = torch.tensor([0, 3, 150, tiny_model.config.vocab_size - 1])

    logps = token_logprobs_from_hidden_states(tiny_model, hidden, targets, vocab_chunk_size)

    with torch.no_grad():
        logits = tiny_model.get_output_embeddings()(hidden).float()
        expected = logits.log_softmax(-1)[torch.arange(4), targets]
    assert logps.dtype == torch.float32
    assert_close(logps, expected, **FP32)


def test_sequence_logprobs_ignores_values_outside_the_response():
    """[[-1, -2, -3], [-4, -5, -6]] with masks [F, T, T], [F, F, T] -> [-2 - 3, -6]."""
    token_logps = -torch.arange(1.0, 7.0).view(2, 3)
    response_mask = torch.tensor([[False, True, True], [False, False, True]])
    assert_close(sequence_logprobs(token_logps, response_mask), torch.tensor([-5.0, -6.0]))


def test_position_ids_count_real_tokens_only():
    attention_mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
    expected = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 2, 2]])
    assert torch.equal(position_ids_from_attention_mask(attention_mask), expected)


@pytest.mark.parametrize("vocab_chunk_size", [None, VOCAB_CHUNK])
def test_gradients_equal_full_logits_gradients(tiny_model, vocab_chunk_size):
    batch = collate(PAIRS, "left")
    fast = parameter_grads(
        tiny_model,
        lambda m, b: response_token_logprobs(m, **b, vocab_chunk_size=vocab_chunk_size),
        batch,
    )
    naive = parameter_grads(tiny_model, lambda m, b: naive_response_token_logprobs(m, **b), batch)
    assert fast.keys() == naive.keys() and len(fast) > 0
    for name in naive:
        assert_close(fast[name], naive[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.filterwarnings("ignore:fan_in_fan_out")  # peft notes GPT-2's Conv1D layout
@pytest.mark.parametrize("vocab_chunk_size", [None, VOCAB_CHUNK])
def test_lora_adapters_are_applied_and_trained(tiny_model_dir, vocab_chunk_size):
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    batch = collate(PAIRS, "right")
    without_adapter = response_token_logprobs(base, **batch)
    model = lora_model(base)
    fast, naive = both_paths(model, batch, vocab_chunk_size)
    assert_close(fast, naive, **FP32)
    assert (fast - without_adapter).abs().max() > 1e-3

    fast_grads = parameter_grads(
        model,
        lambda m, b: response_token_logprobs(m, **b, vocab_chunk_size=vocab_chunk_size),
        batch,
    )
    naive_grads = parameter_grads(model, lambda m, b: naive_response_token_logprobs(m, **b), batch)
    assert set(fast_grads) == set(naive_grads) and all("lora_" in name for name in fast_grads)
    for name in naive_grads:
        assert_close(fast_grads[name], naive_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_lora_on_the_lm_head_works_unchunked_and_chunking_refuses_it(tiny_llama_dir):
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    model = lora_model(base, target_modules=["q_proj", "lm_head"])
    batch = collate(PAIRS, "right")
    assert_close(*both_paths(model, batch), **FP32)
    with pytest.raises(ValueError, match="vocab_chunk_size=None"):
        response_token_logprobs(model, **batch, vocab_chunk_size=VOCAB_CHUNK)


def test_prompt_learning_adapters_are_refused_with_advice(tiny_llama_dir):
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    model = get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2))
    with pytest.raises(ValueError, match="prompt-learning"):
        response_token_logprobs(model, **collate(PAIRS, "right"))


def test_distributed_style_wrappers_are_refused_with_advice(tiny_llama_dir):
    """Like DDP, a wrapper that hides the model behind `.module` must not be unwrapped silently:
    calling the inner model directly would skip DDP's gradient synchronisation."""

    class Wrapper(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    model = Wrapper(AutoModelForCausalLM.from_pretrained(tiny_llama_dir))
    with pytest.raises(TypeError, match="inside the wrapped module's forward"):
        response_token_logprobs(model, **collate(PAIRS, "right"))


TINY = {
    "vocab_size": 300,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


@pytest.mark.parametrize(
    "make_model",
    [
        lambda: Gemma2ForCausalLM(Gemma2Config(**TINY, head_dim=16, final_logit_softcapping=0.5)),
        lambda: CohereForCausalLM(CohereConfig(**TINY, logit_scale=3.0)),
        lambda: GraniteForCausalLM(GraniteConfig(**TINY, logits_scaling=0.25)),
    ],
    ids=["gemma2-softcapping", "cohere-logit-scale", "granite-logits-scaling"],
)
@pytest.mark.parametrize("vocab_chunk_size", [None, VOCAB_CHUNK])
def test_models_that_transform_their_logits_match_their_own_forward(make_model, vocab_chunk_size):
    """The transform is strong here (softcap 0.5, scale 3, 1/0.25): leaving it out changes the
    log-probs by ~0.2, far above the tolerance."""
    torch.manual_seed(0)
    model = make_model().eval()
    assert_close(*both_paths(model, collate(PAIRS, "left"), vocab_chunk_size), **FP32)


def test_bf16_model_gives_float32_logprobs_close_to_full_logits(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.bfloat16)
    batch = collate(PAIRS, "right")
    for vocab_chunk_size in (None, VOCAB_CHUNK):
        fast, naive = both_paths(model, batch, vocab_chunk_size)
        assert fast.dtype == torch.float32
        assert_close(fast, naive, atol=2e-2, rtol=0)


def test_chunked_path_trains_under_autocast(tiny_llama_dir):
    """Autocast is off where autograd runs backward; the recomputing backward must still find
    matching dtypes and agree with the unchunked path."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    batch = collate(PAIRS, "right")
    grads = {}
    for vocab_chunk_size in (None, VOCAB_CHUNK):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            token_logps = response_token_logprobs(model, **batch, vocab_chunk_size=vocab_chunk_size)
        model.zero_grad(set_to_none=True)
        token_logps.sum().backward()
        grads[vocab_chunk_size] = model.lm_head.weight.grad.clone()
    assert_close(grads[VOCAB_CHUNK], grads[None], atol=2e-2, rtol=5e-2)


@pytest.mark.parametrize(
    "transform",
    [LogitTransform(), LogitTransform(scale=1.7), LogitTransform(scale=0.8, softcap=1.5)],
    ids=["plain", "scaled", "softcapped"],
)
def test_chunked_logprobs_gradients_are_exact(transform):
    """float64 gradcheck of the recomputing backward against finite differences: vocabulary of
    10 in slices of 4 (4, 4, 2), targets in every slice including the first and last ids."""
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(5, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(10, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    bias = torch.randn(10, dtype=torch.float64, generator=generator, requires_grad=True)
    targets = torch.tensor([0, 3, 4, 8, 9])

    def chunked(h, w, b):
        return chunked_token_logprobs(h, w, b, targets, 4, transform)

    torch.autograd.gradcheck(chunked, (hidden, weight, bias))
    full = transform(hidden @ weight.T + bias).log_softmax(-1)[torch.arange(5), targets]
    assert_close(chunked(hidden, weight, bias), full)


def test_chunked_logprobs_without_bias_match_log_softmax():
    """Logits [[0, ln 3]] for a vocabulary of 2: log p = [ln 1/4, ln 3/4]."""
    hidden = torch.tensor([[1.0]])
    weight = torch.tensor([[0.0], [torch.log(torch.tensor(3.0))]])
    logps = [chunked_token_logprobs(hidden, weight, None, torch.tensor([t]), 1) for t in (0, 1)]
    assert_close(torch.cat(logps), torch.log(torch.tensor([0.25, 0.75])))


def test_batch_without_response_tokens_gives_zeros(tiny_model):
    batch = collate(PAIRS, "right")
    batch["response_mask"][:] = False
    for vocab_chunk_size in (None, VOCAB_CHUNK):
        token_logps = response_token_logprobs(
            tiny_model, **batch, vocab_chunk_size=vocab_chunk_size
        )
        assert torch.equal(token_logps, torch.zeros_like(token_logps))


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda b: b["response_mask"][:, 0].fill_(True), "position 0"),
        (lambda b: b["attention_mask"][0].fill_(0), "padding"),
        (lambda b: b.update(response_mask=b["response_mask"].long()), "bool"),
        (lambda b: b.update(attention_mask=b["attention_mask"][:, 1:]), "same"),
    ],
    ids=["response-at-position-0", "response-on-padding", "integer-mask", "shape-mismatch"],
)
def test_malformed_batches_are_refused_with_a_reason(tiny_llama_dir, corrupt, message):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    batch = collate(PAIRS, "right")
    corrupt(batch)
    with pytest.raises(ValueError, match=message):
        response_token_logprobs(model, **batch)


@pytest.mark.parametrize("vocab_chunk_size", [0, -3, 2.5])
def test_vocab_chunk_size_must_be_a_positive_integer(tiny_llama_dir, vocab_chunk_size):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    with pytest.raises(ValueError, match="positive integer"):
        response_token_logprobs(model, **collate(PAIRS, "right"), vocab_chunk_size=vocab_chunk_size)
