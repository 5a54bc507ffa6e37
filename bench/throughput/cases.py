"""What a benchmark case is: its settings (`BenchConfig`) and the names they take, the model
shapes, precisions and methods (training steps and the reference passes) the benchmark times.
"""

from __future__ import annotations

from dataclasses import dataclass

from alol.method.objectives import OBJECTIVES

MODEL_SHAPES: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
    "small": dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=4),  # a CPU-sized check of ratios
    "0.5b": dict(hidden_size=1280, intermediate_size=3584, num_hidden_layers=24,
                 num_attention_heads=20, num_key_value_heads=4),
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
               num_attention_heads=32, num_key_value_heads=4),  # TinyLlama-1.1B's shape
    "3b": dict(hidden_size=3200, intermediate_size=8640, num_hidden_layers=26,
               num_attention_heads=32, num_key_value_heads=32),  # OpenLLaMA-3B's shape
}  # fmt: skip
PRECISIONS = ("fp32", "autocast", "bf16")
"""fp32; bf16 autocast over fp32 weights, gradients and AdamW state (what `--bf16` in the
trainer does: the fp32 weights are the master copy); bf16 weights, gradients and AdamW state
(no fp32 master copy: small updates round away, so a throughput lever, not a recipe)."""
TRAIN_METHODS = ("hf_nll", *OBJECTIVES)
"""`hf_nll`: the plain NLL step as a naive loop writes it, `model(..., labels=...).loss` over
full-vocabulary logits. `nll`: the same loss through alol's response-only log-probs."""
PRECOMPUTE_METHODS = (
    "precompute",
    "precompute_unshared",
    "precompute_full_logits",
    "precompute_compiled",
)
"""The reference pass over HH pairs (a prompt, its chosen and its rejected response), four
ways: `precompute`, alol's default, runs each prompt once and continues its KV cache with each
response; `precompute_unshared` runs prompt + response once per response; `precompute_full_logits`
scores each (prompt, response) row through the model's own forward, all [B, L, V] logits then
log-softmax, as TRL's reference precompute does (two rows per pair; eager, as TRL runs it);
`precompute_compiled` is `precompute` with each decoder layer's cache-free parts (norms, MLP)
compiled, as `AdvantageConfig.compile_layers` compiles for this pass, on a copy of the model that shares its weights
(`compiled_layers_copy`). Their tokens/s count the input tokens of the per-row form, 2p + c + r
per pair, whatever each runs, so the four rates compare as pairs scored per second."""
SHARED_PROMPT_METHODS = ("precompute", "precompute_compiled")
"""The cases that run `score_shared_prompt_batch`: each prompt once for all its responses."""
EAGER_PRECOMPUTE_METHODS = tuple(m for m in PRECOMPUTE_METHODS if m != "precompute_compiled")


@dataclass
class BenchConfig:
    device: str = "cpu"
    model: str = "tiny"
    precision: str = "fp32"
    batch_size: int = 4
    """Rows per step: sequences for pointwise objectives, pairs for DPO, prompts for PRO."""
    grouping: str = "length"
    """'length': batches of similar length, as the trainer draws them; 'random': padded to the
    longest of a random batch."""
    max_tokens: int | None = None
    """Token-budget batches instead of `batch_size` examples: as many examples as fit this many
    padded tokens (`alol.data.batching.pack_to_token_budget`, as `--max-tokens-per-batch` trains),
    each batch's loss scaled by `example_weight`. Training cases only."""
    pad_to_multiple_of: int | None = None
    """Pad each training batch's length up to a multiple of this (the collator's option)."""
    packing: bool = False
    """Padding-free training batches (`--packing`): each micro-batch as one row, the sequences
    kept apart by a block-causal mask or, under flex/flash attention, by the position ids."""
    steps: int = 3
    warmup: int = 1
    max_prompt_length: int = 640
    max_response_length: int = 128
    attention: str = "sdpa"
    gradient_checkpointing: bool = False
    compile_layers: bool = False
    """torch.compile each decoder layer in place (`alol.models.compilation.compile_decoder_layers`,
    what `--compile-layers` does in training)."""
    fused_adamw: bool = True
    sync_free: bool = True
    """The log-probs as AlolTrainer runs them: the collator's response positions and, for these
    right-padded batches, a decoder without attention mask or position ids (no host sync of
    alol's own). False: masks checked and positions found on the device, decoder given the mask
    (alol before the change, and what the masked precompute cases still do)."""
    seed: int = 0
