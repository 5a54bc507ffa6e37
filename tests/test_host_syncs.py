"""A training step queues its work on the device and never waits for it.

A host sync (`.item()`, `bool(tensor)`, `nonzero`, a data-dependent shape) makes the CPU wait
until the device has run everything queued so far, so the device then idles while the CPU
issues the rest of the step. On a launch-bound step (bench/NOTES.md) that idle time is the
cost. Every sync reaches the dispatcher as `aten._local_scalar_dense` or a `nonzero`, on the
CPU too, so counting those ops during a CPU step counts the syncs a GPU step would make.

One sync is upstream's: in eager mode, transformers' mask preparation reads a value once per
decoder forward (is the padding mask all ones? are the position ids packed sequences?) to
pick its attention path; every trainer built on transformers pays it. A padded mask costs
two such reads and a materialised [B, 1, L, L] mask; right-padded batches go mask-free and
pay one.
"""

from __future__ import annotations

import traceback
from collections import Counter
from pathlib import Path

import pytest
import torch
import transformers
from torch.testing import assert_close
from torch.utils._python_dispatch import TorchDispatchMode

from alol.data.collate import Collator, collate_pairs
from alol.data.examples import RankedExample
from alol.data.tokenize import TokenizedPair
from alol.method.objectives import OBJECTIVES
from alol.models.logprobs import response_token_logprobs, response_token_logprobs_and_hidden_states
from tests.test_invariance import make_trainer, pipeline  # noqa: F401  (fixture)

SYNC_OPS = ("aten._local_scalar_dense", "aten.nonzero", "aten.masked_select")
UPSTREAM_MASK_PREPARATION = "transformers/masking_utils.py"

PAIRS = [
    TokenizedPair([11, 12, 13, 14, 15], [21, 22, 23]),
    TokenizedPair([31, 32], [41, 42, 2]),
    TokenizedPair([51, 52, 53, 54, 55, 56, 57], [61, 62, 63, 2]),
]


class SyncCounter(TorchDispatchMode):
    """Counts the operators that read a tensor's values back to the host, by operator and by
    the file that asked for them (the innermost frame outside torch)."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: Counter[str] = Counter()
        self.origins: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if name.startswith(SYNC_OPS):
            self.syncs[name] += 1
            self.origins[calling_file()] += 1
        return func(*args, **(kwargs or {}))


def calling_file() -> str:
    for frame in reversed(traceback.extract_stack()):
        path = Path(frame.filename)
        if "torch" not in path.parts and path != Path(__file__):
            package = next((name for name in ("alol", "transformers") if name in path.parts), None)
            # The package's own folder is its last occurrence: a checkout may be named alol too.
            last = [i for i, part in enumerate(path.parts) if part == package]
            start = last[-1] if package else len(path.parts) - 2
            return "/".join(path.parts[start:])
    raise AssertionError("no caller outside torch")


def test_the_collator_ships_the_position_of_every_response_token():
    batch = collate_pairs(PAIRS, pad_token_id=0)

    rows, cols = batch["response_positions"]
    assert rows.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    assert cols.tolist() == [5, 6, 7, 2, 3, 4, 7, 8, 9, 10]
    assert batch["response_mask"][rows, cols].all()
    assert int(batch["response_mask"].sum()) == len(rows)


@pytest.mark.parametrize("vocab_chunk_size", [None, 7])
def test_shipped_positions_and_no_attention_mask_for_right_padding_give_the_same_logprobs(
    tiny_model, vocab_chunk_size
):
    """Right padding follows every row's tokens, so causal attention alone hides it from them."""
    batch = collate_pairs(PAIRS, pad_token_id=0)
    masks = {key: batch[key] for key in ("input_ids", "attention_mask", "response_mask")}

    checked, checked_hidden = response_token_logprobs_and_hidden_states(
        tiny_model, **masks, vocab_chunk_size=vocab_chunk_size
    )
    fast, fast_hidden = response_token_logprobs_and_hidden_states(
        tiny_model,
        **masks,
        vocab_chunk_size=vocab_chunk_size,
        response_positions=batch["response_positions"],
        right_padded=True,
    )

    assert_close(fast, checked, atol=1e-5, rtol=1e-5)
    real = batch["attention_mask"].bool()
    assert_close(fast_hidden[real], checked_hidden[real], atol=1e-5, rtol=1e-5)


BASE = {"vocab_size": 300, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
ARCHITECTURES = {
    "opt-learned-positions": lambda: transformers.OPTForCausalLM(
        transformers.OPTConfig(**BASE, **SMALL, ffn_dim=64, word_embed_proj_dim=32)
    ),
    "bloom-alibi": lambda: transformers.BloomForCausalLM(
        transformers.BloomConfig(**BASE, hidden_size=32, n_layer=2, n_head=2)
    ),
    "falcon-alibi": lambda: transformers.FalconForCausalLM(
        transformers.FalconConfig(**BASE, **SMALL, alibi=True)
    ),
    "gpt-neox": lambda: transformers.GPTNeoXForCausalLM(
        transformers.GPTNeoXConfig(**BASE, **SMALL, intermediate_size=64)
    ),
    "gptj-partial-rotary": lambda: transformers.GPTJForCausalLM(
        transformers.GPTJConfig(**BASE, n_embd=32, n_layer=2, n_head=2, rotary_dim=8)
    ),
    "phi": lambda: transformers.PhiForCausalLM(
        transformers.PhiConfig(**BASE, **SMALL, intermediate_size=64)
    ),
    "qwen2": lambda: transformers.Qwen2ForCausalLM(
        transformers.Qwen2Config(**BASE, **SMALL, intermediate_size=64, num_key_value_heads=1)
    ),
    "mistral-sliding-window": lambda: transformers.MistralForCausalLM(
        transformers.MistralConfig(
            **BASE, **SMALL, intermediate_size=64, num_key_value_heads=1, sliding_window=4
        )
    ),
    "gemma2-sliding-window": lambda: transformers.Gemma2ForCausalLM(
        transformers.Gemma2Config(
            **BASE, **SMALL, intermediate_size=64, num_key_value_heads=1, head_dim=16,
            sliding_window=4,
        )
    ),
}  # fmt: skip


@pytest.mark.parametrize("make_model", ARCHITECTURES.values(), ids=ARCHITECTURES.keys())
def test_the_mask_free_decoder_holds_for_every_kind_of_position_encoding(make_model):
    """Learned, rotary (whole and partial) and ALiBi positions, sliding windows: each model
    derives the same positions and the same causal window for the real tokens of a
    right-padded row with and without the mask (rows of 8, 5 and 11 tokens; window 4)."""
    torch.manual_seed(0)
    model = make_model().eval()
    batch = collate_pairs(PAIRS, pad_token_id=0)
    masks = {key: batch[key] for key in ("input_ids", "attention_mask", "response_mask")}

    with torch.no_grad():
        masked = response_token_logprobs(model, **masks)
        mask_free = response_token_logprobs(
            model, **masks, response_positions=batch["response_positions"], right_padded=True
        )

    assert batch["attention_mask"].min() == 0, "the rows are padded"
    assert_close(mask_free, masked, atol=1e-5, rtol=1e-5)


def test_without_shipped_positions_the_masks_are_checked_and_a_sync_is_paid(tiny_model):
    batch = collate_pairs(PAIRS, pad_token_id=0)
    bad_mask = batch["response_mask"].clone()
    bad_mask[1, 6] = True  # padding marked as response
    with pytest.raises(ValueError, match="marks padding"):
        response_token_logprobs(tiny_model, batch["input_ids"], batch["attention_mask"], bad_mask)

    with SyncCounter() as counter, torch.no_grad():
        response_token_logprobs(
            tiny_model, batch["input_ids"], batch["attention_mask"], batch["response_mask"]
        )
    alols = sum(n for origin, n in counter.origins.items() if origin.startswith("alol/"))
    assert alols == 3  # two mask checks, then nonzero
    assert counter.origins[UPSTREAM_MASK_PREPARATION] == 2  # a padded mask: two reads


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_a_training_step_of_every_objective_makes_no_host_sync_of_its_own(
    tmp_path,
    pipeline,  # noqa: F811
    objective,
):
    """Forward, objective, metrics and backward of one micro-batch, as Trainer runs them: one
    decoder forward (KTO: a second, without gradients, over its mismatched pairs), so
    transformers' one read per forward, and none from alol."""
    trainer = make_trainer(pipeline, objective, tmp_path, batch=4, accumulation=1)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop; this calls one step

    with SyncCounter() as counter:
        loss = trainer.training_step(trainer.model, batch)

    forwards = 2 if objective == "kto" else 1
    assert counter.origins == Counter({UPSTREAM_MASK_PREPARATION: forwards})
    assert torch.isfinite(loss)
    assert any(p.grad is not None for p in trainer.model.parameters())


def test_the_training_loop_around_the_step_reads_nothing_back_per_step(
    tmp_path,
    pipeline,  # noqa: F811
):
    """Trainer's loop (accumulation, clipping, fused AdamW, scheduler) between log steps: its
    per-step NaN/inf filter, which reads every loss, is off in AlolConfig. Counted as the growth
    from 2 to 4 steps, so one-off reads (the sampler's draws, the final loss) cancel. Per step
    remain transformers' one read and the collator's `nonzero`, which runs on host tensors in
    the DataLoader (no device to wait for)."""

    def sync_origins(steps: int) -> Counter[str]:
        trainer = make_trainer(
            pipeline, "a_lol", tmp_path / str(steps), batch=4, accumulation=1,
            max_steps=steps, logging_steps=1000,
        )  # fmt: skip
        with SyncCounter() as counter:
            trainer.train()
        return counter.origins

    growth = sync_origins(4) - sync_origins(2)

    assert growth == Counter({UPSTREAM_MASK_PREPARATION: 2, "alol/data/collate.py": 2})


def test_a_ranked_example_with_one_candidate_is_refused_on_the_host_naming_it():
    collator = Collator(pad_token_id=0)
    examples = [
        RankedExample(candidates=PAIRS[:2], rewards=[1.0, 0.0], index=0),
        RankedExample(candidates=PAIRS[2:], rewards=[1.0], index=7),
    ]
    with pytest.raises(ValueError, match="example 7 has 1 candidate"):
        collator(examples)
