"""Regional torch.compile: each decoder layer compiled in place trains exactly like eager."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch._dynamo.utils import counters
from transformers import AutoModelForCausalLM, AutoTokenizer

from alol.data.records import RewardRecord
from alol.demo.tiny_models import build_tiny_model, save_tiny
from alol.models.compilation import compile_decoder_layers, decoder_layers
from alol.models.precompute import AdvantageConfig, compute_advantages
from alol.train import AlolConfig, AlolTrainer
from tests.test_invariance import make_trainer, pipeline  # noqa: F401  (fixture)


def test_the_decoder_layers_are_found_through_a_peft_wrapper(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    plain = decoder_layers(model)
    wrapped = decoder_layers(get_peft_model(model, LoraConfig(r=2, target_modules="all-linear")))

    assert len(plain) == model.config.num_hidden_layers
    assert [id(layer) for layer in wrapped] == [id(layer) for layer in plain]


def test_a_model_without_named_layers_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot find the decoder layers of Linear"):
        compile_decoder_layers(torch.nn.Linear(2, 2))


def test_torch_compile_is_refused_with_the_option_that_works(tmp_path):
    with pytest.raises(ValueError, match="compile_layers=True"):
        AlolConfig(output_dir=str(tmp_path), torch_compile=True)


def train_losses(pipeline, output, compile_layers: bool) -> tuple[list[float], AlolTrainer]:  # noqa: F811
    trainer = make_trainer(
        pipeline, "a_lol", output, 4, 1, compile_layers=compile_layers, pad_to_multiple_of=8
    )
    trainer.train()
    return [row["loss"] for row in trainer.state.log_history if "loss" in row], trainer


def test_compiled_layers_train_like_eager_ones(tmp_path, pipeline):  # noqa: F811
    torch._dynamo.reset()
    counters.clear()
    eager, _ = train_losses(pipeline, tmp_path / "eager", compile_layers=False)
    compiled, trainer = train_losses(pipeline, tmp_path / "compiled", compile_layers=True)

    assert compiled == pytest.approx(eager, rel=1e-4)
    assert counters["stats"]["unique_graphs"] >= 1, "dynamo compiled the layers"
    layers = decoder_layers(trainer.model)
    assert all(layer._compiled_call_impl is not None for layer in layers)


def test_a_compiled_reference_precomputes_the_same_table_with_every_call_compiled(
    tmp_path, tiny_tokenizer_dir
):
    """Both passes of the prompt-shared precompute (prompts with a KV cache, then responses on
    it), over batches of several shapes and six layers, run through compiled code (no frame
    left to eager at dynamo's recompile limit, which per-layer graphs of whole compiled layers
    would hit) and give the eager numbers."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    directory = save_tiny(build_tiny_model(tokenizer, num_layers=6), tokenizer, tmp_path)
    model = AutoModelForCausalLM.from_pretrained(directory)
    records = [
        RewardRecord(prompt=f"Tell me {'very ' * i}about tea?", response=response, reward=1.0)
        for i in range(6)
        for response in ("Sure, tea is nice and warm.", "No.")
    ]
    config = AdvantageConfig(batch_size=4, show_progress=False)
    eager = compute_advantages(model, tokenizer, records, config)
    torch._dynamo.reset()
    counters.clear()

    compiled = compute_advantages(model, tokenizer, records, replace(config, compile_layers=True))

    assert counters["stats"]["unique_graphs"] >= 1
    assert counters["frames"]["total"] == counters["frames"]["ok"], "no frame fell back to eager"
    np.testing.assert_allclose(compiled.ref_token_logps, eager.ref_token_logps, atol=1e-5)


def test_compiled_layers_compile_at_most_three_times_over_token_budget_batches_of_many_shapes(
    tmp_path,
    pipeline,  # noqa: F811
):
    """Token budgets vary both the batch size and the length. Dynamo compiles a layer for the
    first shape, then again each time a dimension first changes, now symbolic (at most 3
    graphs); every later shape reuses the last graph (a compile per shape would stall every
    step, and past 8 would fall back to eager)."""
    trainer = make_trainer(
        pipeline, "a_lol", tmp_path, 4, 1, compile_layers=True, max_tokens_per_batch=96,
        max_steps=8,
    )  # fmt: skip
    shapes = set()
    compute_loss = trainer.compute_loss

    def recording_shapes(model, inputs, *args, **kwargs):
        shapes.add(tuple(inputs["input_ids"].shape))
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = recording_shapes
    torch._dynamo.reset()
    counters.clear()
    trainer.train()

    assert len({rows for rows, _ in shapes}) >= 2 and len({width for _, width in shapes}) >= 2
    assert len(shapes) > counters["stats"]["unique_graphs"]
    assert counters["stats"]["unique_graphs"] <= 3
    assert counters["frames"]["total"] == counters["frames"]["ok"], "no frame fell back to eager"
