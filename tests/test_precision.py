"""bf16 runs only where it is native: a CPU that emulates it trains in float32 instead, and
says so, while stage fingerprints keep the setting as configured."""

from __future__ import annotations

import logging

import pytest

from alol.config import PipelineConfig
from alol.pipeline.settings import trainer_kwargs
from alol.rewards.reward_model import RewardModelConfig, training_arguments
from alol.train.config import AlolConfig
from alol.train.precision import trains_in_bf16
from bench.common import training_precision


@pytest.fixture
def machine(monkeypatch):
    """Sets what this machine has: an accelerator, a CPU with native bf16."""

    def set_machine(accelerator: bool, native_cpu_bf16: bool) -> None:
        monkeypatch.setattr("alol.train.precision.has_accelerator", lambda: accelerator)
        monkeypatch.setattr("alol.train.precision.cpu_has_native_bf16", lambda: native_cpu_bf16)

    return set_machine


@pytest.mark.parametrize(
    ("asked", "accelerator", "native_cpu_bf16", "runs"),
    [
        (True, True, False, True),
        (True, False, True, True),
        (True, False, False, False),
        (False, True, True, False),
        (False, False, True, False),
    ],
)
def test_bf16_runs_where_it_is_asked_for_and_native(
    asked, accelerator, native_cpu_bf16, runs, machine
):
    machine(accelerator, native_cpu_bf16)
    assert trains_in_bf16(asked) is runs


def test_bf16_on_a_cpu_that_emulates_it_trains_in_float32_and_names_the_setting(machine, caplog):
    machine(accelerator=False, native_cpu_bf16=False)
    with caplog.at_level(logging.WARNING):
        args = AlolConfig(output_dir="unused", objective="nll", bf16=True)

    assert not args.bf16 and not args.use_cpu
    assert "training in float32 instead (set bf16: false" in caplog.text


def test_bf16_on_a_cpu_with_native_bf16_is_cpu_autocast(machine, caplog):
    machine(accelerator=False, native_cpu_bf16=True)
    with caplog.at_level(logging.WARNING):
        args = AlolConfig(output_dir="unused", objective="nll", bf16=True)

    assert args.bf16 and args.use_cpu
    assert "bf16" not in caplog.text


def test_a_reward_model_fit_follows_the_same_rule(machine, tmp_path):
    machine(accelerator=False, native_cpu_bf16=False)
    emulated = training_arguments(RewardModelConfig("minilm", bf16=True), tmp_path, False, 10, [])
    machine(accelerator=False, native_cpu_bf16=True)
    native = training_arguments(RewardModelConfig("minilm", bf16=True), tmp_path, False, 10, [])

    assert (emulated.bf16, emulated.use_cpu) == (False, False)
    assert (native.bf16, native.use_cpu) == (True, True)


def test_the_training_settings_a_fingerprint_holds_are_the_same_on_either_cpu(machine, tmp_path):
    """A run folder made on one machine is up to date on the other."""
    cfg = PipelineConfig(bf16=True)
    machine(accelerator=False, native_cpu_bf16=False)
    emulated = trainer_kwargs(cfg, "a_lol", tmp_path, 10)
    machine(accelerator=False, native_cpu_bf16=True)

    assert emulated == trainer_kwargs(cfg, "a_lol", tmp_path, 10)
    assert emulated["bf16"] is True


def test_a_benchmark_names_what_its_runs_trained_in(machine):
    """Tables whose runs came from machines that differ here differ in it."""
    machine(accelerator=False, native_cpu_bf16=False)
    assert training_precision(True) == "float32 (bf16 asked for, not native here)"
    assert training_precision(False) == "float32"
    machine(accelerator=False, native_cpu_bf16=True)
    assert training_precision(True) == "bf16 autocast"
