"""Shared fixtures: tiny models and tokenizers built locally, saved and loaded back."""

from __future__ import annotations

import os

# Tiny models are dominated by threading overhead, and CI's 2 cores are shared with the
# subprocesses some tests start (which inherit this variable): one thread each is fastest.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer

from alol.demo.tiny_models import build_tiny_model, save_tiny, train_tokenizer  # noqa: E402
from alol.models.reference import ReferenceConfig  # noqa: E402

torch.set_num_threads(1)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Human: How do I bake bread? Assistant: Mix flour, water, salt and yeast, then bake.",
    "I am happy to help you with that question, it is a great one.",
    "Please be kind and helpful, never rude or harmful.",
    "Numbers like 1 2 3 4 5 6 7 8 9 10 appear in text too.",
] * 20

SHARED_HH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hh"

ONE_PASS_EACH = ReferenceConfig(batch_size=4, share_prompts=False, show_progress=False)
"""The textbook reference pass: one forward over prompt + response per pair."""


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(CORPUS, vocab_size=300).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session", params=["gpt2", "llama"])
def tiny_model_dir(request, tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A tiny model of each architecture, saved to disk so tests load it the way users do."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    model = build_tiny_model(tokenizer, architecture=request.param)
    return save_tiny(model, tokenizer, tmp_path_factory.mktemp(f"tiny-{request.param}"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    model = build_tiny_model(tokenizer, architecture="llama")
    return save_tiny(model, tokenizer, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def tiny_model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


@pytest.fixture
def tiny_tokenizer(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


def constant_value_head(run_dir: Path, model_dir: Path, value: float = 0.0) -> Path:
    """Save into `run_dir/value/` a value head that predicts `value` for every prompt, for
    tests that want A = R − value without fitting V (the pipeline never assumes V = 0). It
    records `model_dir` as the model it was fitted on, as `alol value` does."""
    from alol.fingerprint import fingerprint_model
    from alol.method.value_head import ValueHead
    from alol.models.value_io import save_value_head
    from alol.provenance import model_record

    config = AutoModelForCausalLM.from_pretrained(model_dir).config
    head = ValueHead(config.hidden_size, num_heads=1, max_value=None)
    with torch.no_grad():
        head.output.weight.zero_()
        head.output.bias.fill_(value)
    model = model_record(model_dir, fingerprint_model(model_dir))
    save_value_head(head, Path(run_dir) / "value", model=model)
    return Path(run_dir) / "value"
