"""QLoRA (`--load-in-4bit`): a 4-bit NF4 base through bitsandbytes, adapters trained on it,
π_ref's log-probs precomputed from the same 4-bit weights, decoding in full precision."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from alol.cli import main
from alol.config import PipelineConfig
from alol.data.tokenize import tokenize_pair
from alol.errors import AlolError
from alol.models.logprobs import response_token_logprobs
from alol.models.quantization import four_bit_config, is_quantized
from alol.pipeline.inputs import (
    load_model,
    load_model_for_inference,
    load_tokenizer,
    load_weights_to_train,
)
from alol.train import AlolConfig, AlolTrainer

pytest.importorskip("bitsandbytes")

ROWS = [
    {"prompt": f"Tell me about {topic}?", "response": response, "reward": reward}
    for topic in ("bread", "tea", "rain", "music", "books", "cats")
    for response, reward in [
        (f"I am happy to help with {topic}.", 1.0),
        (f"No. {topic} is dull.", 0.2),
    ]
]


@pytest.fixture
def qlora_config(tmp_path, tiny_llama_dir) -> Path:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"prompt": r["prompt"]}) + "\n" for r in ROWS[::4]))
    config = {
        "model": str(tiny_llama_dir),
        "train_data": str(data),
        "test_data": str(test),
        "reward": "length",
        "run_dir": str(tmp_path / "run"),
        "val_fraction": 0.34,
        "max_steps": 3,
        "batch_size": 2,
        "learning_rate": 1e-2,
        "max_prompt_length": 16,
        "max_response_length": 10,
        "max_new_tokens": 6,
        "logging_steps": 1,
        "value_epochs": 2,
        "lora": True,
        "lora_target_modules": "q_proj,v_proj",
        "load_in_4bit": True,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_every_stage_runs_on_a_4bit_base_and_the_saved_models_are_full_precision(qlora_config):
    assert main(["run", str(qlora_config), "--objectives", "a_lol"]) == 0
    run = qlora_config.parent / "run"
    reference = run / "sft" / "model"
    assert "quantization_config" not in json.loads((reference / "config.json").read_text())
    with safe_open(str(reference / "model.safetensors"), "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.float32}  # noqa: SIM118
    assert (run / "train" / "a_lol" / "final" / "adapter_config.json").exists()
    assert (run / "eval" / "a_lol" / "eval.json").exists()
    first = json.loads((run / "train" / "a_lol" / "metrics.jsonl").read_text().splitlines()[0])
    # π_ref's log-probs came from the same 4-bit weights the policy starts from; bitsandbytes'
    # training kernel (dequantize, then matmul) rounds a little differently from its inference one
    assert first["importance_weight/mean"] == pytest.approx(1.0, abs=5e-3)


def _logprobs(model, tokenizer) -> torch.Tensor:
    pair = tokenize_pair(tokenizer, "Tell me about tea?", " I am happy to help.", 16, 10)
    ids = torch.tensor([pair.prompt_ids + pair.response_ids])
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[0, len(pair.prompt_ids) :] = True
    with torch.no_grad():
        return response_token_logprobs(model, ids, torch.ones_like(ids), mask)[mask]


def test_the_precompute_and_the_policy_read_the_same_4bit_weights(tiny_llama_dir):
    cfg = PipelineConfig(lora=True, load_in_4bit=True)
    policy, tokenizer = load_weights_to_train(cfg, tiny_llama_dir), load_tokenizer(tiny_llama_dir)
    reference, _ = load_model_for_inference(tiny_llama_dir, "float32", load_in_4bit=True)
    full, _ = load_model(tiny_llama_dir)
    assert is_quantized(policy) and is_quantized(reference) and not is_quantized(full)
    quantized = _logprobs(policy, tokenizer)
    torch.testing.assert_close(quantized, _logprobs(reference, tokenizer), rtol=0, atol=0)
    error = (quantized - _logprobs(full, tokenizer)).abs().max().item()
    assert 0 < error < 0.5  # NF4 rounds the weights: close, not equal


def test_a_4bit_base_without_lora_is_refused_naming_the_setting(tiny_llama_dir):
    with pytest.raises(AlolError, match="needs lora: true"):
        load_weights_to_train(PipelineConfig(load_in_4bit=True), tiny_llama_dir)


def test_the_trainer_refuses_to_train_4bit_weights_without_adapters(tiny_llama_dir, tmp_path):
    model = load_weights_to_train(PipelineConfig(lora=True, load_in_4bit=True), tiny_llama_dir)
    args = AlolConfig(output_dir=str(tmp_path), objective="nll")
    with pytest.raises(ValueError, match="pass peft_config"):
        AlolTrainer(model, args, [], load_tokenizer(tiny_llama_dir))


def test_without_bitsandbytes_the_error_names_the_install_command(monkeypatch):
    real = __import__("importlib").util.find_spec
    monkeypatch.setattr(
        "alol.models.quantization.importlib.util.find_spec",
        lambda name: None if name == "bitsandbytes" else real(name),
    )
    with pytest.raises(AlolError, match=r"pip install 'alol\[qlora\]'"):
        four_bit_config("bfloat16")


@pytest.mark.parametrize(
    ("native_cpu_bf16", "dtype"), [(False, torch.float32), (True, torch.bfloat16)]
)
def test_a_4bit_base_under_bf16_computes_in_bf16_only_where_it_is_native(
    native_cpu_bf16, dtype, tiny_llama_dir, monkeypatch, caplog
):
    """A CPU without native bf16 would emulate it at about 15× the float32 time. Loading says
    nothing of it: the trainer's config warns once that it trains in float32."""
    monkeypatch.setattr("alol.train.precision.has_accelerator", lambda: False)
    monkeypatch.setattr("alol.train.precision.cpu_has_native_bf16", lambda: native_cpu_bf16)
    cfg = PipelineConfig(lora=True, load_in_4bit=True, bf16=True)

    with caplog.at_level(logging.WARNING):
        model = load_weights_to_train(cfg, tiny_llama_dir)

    assert model.get_input_embeddings().weight.dtype == dtype
    assert model.config.quantization_config.bnb_4bit_compute_dtype == dtype
    assert "bf16" not in caplog.text
