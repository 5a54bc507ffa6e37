"""Crash safety: a killed run resumes to the same weights; torn or damaged files never load."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import constant_value_head
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from alol.atomic import replace_directory, write_atomic, write_text
from alol.cli import main
from alol.data.examples import ExampleDataset, SequenceExample
from alol.data.tokenize import tokenize_pair
from alol.models.generate import GenerationConfig
from alol.rewards import CallableReward
from alol.train import AlolConfig, AlolTrainer
from alol.train.checkpoints import PARTIAL_CHECKPOINTS

MAX_STEPS = 6


@pytest.fixture
def config(tmp_path, tiny_llama_dir) -> Path:
    """a_lol from a tiny reference; rewards stored in the data, a value head predicting 0
    (A = R)."""
    constant_value_head(tmp_path / "run", tiny_llama_dir)
    rows = [
        {"prompt": f"Tell me about {topic}?", "response": response, "reward": reward}
        for topic in ("bread", "tea", "rain", "cats")
        for response, reward in ((f"I am happy to help with {topic}.", 1.0), ("No.", 0.2))
    ]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "reference": str(tiny_llama_dir),
                "train_data": str(data),
                "run_dir": str(tmp_path / "run"),
                "val_fraction": 0.25,
                "objectives": ["a_lol"],
                "max_steps": MAX_STEPS,
                "scale_steps_by_positive_fraction": False,
                "batch_size": 2,
                "learning_rate": 1e-3,
                "max_prompt_length": 16,
                "max_response_length": 10,
                "logging_steps": 1,
                "save_steps": 1,
                "save_total_limit": 2,
            }
        )
    )
    return path


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "train/a_lol/final/model.safetensors")


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before writing {path}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {path} after {timeout} s")
        time.sleep(0.005)


@pytest.mark.parametrize(
    "batching", [[], ["--max-tokens-per-batch", "40"]], ids=["fixed-size", "token-budget"]
)
def test_a_run_killed_at_a_random_step_resumes_to_the_same_final_weights(
    tmp_path, tiny_llama_dir, config, caplog, batching
):
    """SIGKILL lands right after checkpoint k, while step k+1 trains or is being saved."""
    kill_after = random.randint(1, MAX_STEPS - 1)
    killed_run = tmp_path / "killed"
    for run in (killed_run, tmp_path / "uninterrupted"):
        constant_value_head(run, tiny_llama_dir)
    train = ["train", str(config), *batching, "--run-dir"]
    process = subprocess.Popen(
        [sys.executable, "-m", "alol.cli", *train, str(killed_run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(killed_run / f"train/a_lol/checkpoints/checkpoint-{kill_after}", process)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, (
        f"the run finished before the kill at {kill_after}"
    )

    caplog.set_level("INFO")
    assert main([*train, str(killed_run)]) == 0
    assert "resuming from" in caplog.text, f"killed after checkpoint {kill_after}"
    assert main([*train, str(tmp_path / "uninterrupted")]) == 0

    resumed, uninterrupted = final_weights(killed_run), final_weights(tmp_path / "uninterrupted")
    for name, tensor in uninterrupted.items():
        torch.testing.assert_close(resumed[name], tensor, msg=f"{name}, killed after {kill_after}")
    logged = [json.loads(line) for line in (killed_run / "train/a_lol/metrics.jsonl").open()]
    steps = [row["step"] for row in logged if "loss" in row]
    assert steps == list(range(1, MAX_STEPS + 1)), "each step is logged once, none lost"


def reward_model_config(tmp_path: Path, model_dir: Path) -> Path:
    """Two epochs of 4 steps: 32 scored answers to 16 prompts in batches of 8 (4 prompts held
    out), a checkpoint and a log line after every step."""
    rows = [
        {"prompt": f"Tell me about topic {i}?", "response": response, "reward": reward}
        for i in range(20)
        for response, reward in ((f" I am happy to help with topic {i}.", 1.0), (" No.", 0.0))
    ]
    data = tmp_path / "scored.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    path = tmp_path / "reward_model.yaml"
    settings = {
        "model": str(model_dir),
        "reward_model": str(model_dir),
        "train_data": str(data),
        "reward_model_epochs": 2,
        "reward_model_batch_size": 8,
        "reward_model_learning_rate": 3e-3,
        "reward_model_max_length": 24,
        "save_steps": 1,
        "logging_steps": 1,
    }
    path.write_text(yaml.safe_dump(settings))
    return path


def test_a_reward_model_fit_killed_mid_epoch_resumes_from_its_last_step(
    tmp_path, tiny_llama_dir, caplog
):
    """Killed after step 3 of an epoch of 4, the fit resumes there, not at the epoch's start,
    and ends with the model an uninterrupted fit gives."""
    config = reward_model_config(tmp_path, tiny_llama_dir)
    killed, uninterrupted = tmp_path / "killed", tmp_path / "uninterrupted"
    fit = ["reward-model", str(config), "--run-dir"]
    process = subprocess.Popen(
        [sys.executable, "-m", "alol.cli", *fit, str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(killed / "reward_model/checkpoints/checkpoint-3", process)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the fit finished before the kill"

    caplog.set_level("INFO")
    assert main([*fit, str(killed)]) == 0
    assert f"resuming from {killed / 'reward_model/checkpoints/checkpoint-3'}" in caplog.text
    assert main([*fit, str(uninterrupted)]) == 0

    logged = (killed / "reward_model/metrics.jsonl").read_text().splitlines()
    assert [row["step"] for row in map(json.loads, logged) if "loss" in row] == list(range(1, 9))
    resumed, whole = (
        json.loads((run / "reward_model/metrics.json").read_text())["heldout_predictions"]
        for run in (killed, uninterrupted)
    )
    torch.testing.assert_close(torch.tensor(resumed), torch.tensor(whole))


def trainer_for(model_dir: Path, output_dir: Path, max_steps: int) -> AlolTrainer:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    examples = [
        SequenceExample(tokenize_pair(tokenizer, f"Say {word}.", f" {word}!", 8, 6), i, 1.0)
        for i, word in enumerate(["hi", "yes", "no", "bread", "tea", "rain"])
    ]
    args = AlolConfig(
        output_dir=str(output_dir),
        objective="wbc",
        max_steps=max_steps,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        save_steps=1,
        report_to="none",
        disable_tqdm=True,
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return AlolTrainer(model, args, ExampleDataset(examples), processing_class=tokenizer)


def test_a_checkpoint_torn_by_a_crash_is_ignored_and_cleaned_up(tmp_path, tiny_llama_dir):
    """A kill during a save leaves `.partial/checkpoint-N`; resuming starts from N-1."""
    output = tmp_path / "checkpoints"
    first = trainer_for(tiny_llama_dir, output, max_steps=3)
    first.train()
    expected = {k: v.clone() for k, v in first.model.state_dict().items()}
    torn = output / PARTIAL_CHECKPOINTS / "checkpoint-3"
    torn.parent.mkdir()
    (output / "checkpoint-3").rename(torn)  # as if the kill came before the rename
    (torn / "model.safetensors").write_bytes(b"torn")

    resumed = trainer_for(tiny_llama_dir, output, max_steps=3)
    resumed.train(resume_from_checkpoint=True)

    assert not (output / PARTIAL_CHECKPOINTS).exists()
    assert sorted(p.name for p in output.iterdir()) == [f"checkpoint-{n}" for n in (1, 2, 3)]
    for name, tensor in expected.items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor)


def test_the_best_checkpoint_is_recorded_under_its_final_name(tmp_path, tiny_llama_dir):
    """A checkpoint is written under .partial/; the best-model path Trainer records while
    saving it must name the folder it ends up in, in memory and in its trainer_state.json."""
    trainer = trainer_for(tiny_llama_dir, tmp_path / "checkpoints", max_steps=3)
    trainer.reward = CallableReward(lambda prompts, responses: [0.5] * len(prompts), "flat")
    trainer.eval_prompts = ["Say hi.", "Say yes."]
    trainer.generation_config = GenerationConfig(max_new_tokens=2)
    trainer.args.eval_strategy = "steps"
    trainer.args.eval_steps = 1
    trainer.args.metric_for_best_model = "eval_reward"
    trainer.args.load_best_model_at_end = True
    trainer.args.save_total_limit = 1

    trainer.train()

    best = Path(trainer.state.best_model_checkpoint)
    assert best == tmp_path / "checkpoints" / "checkpoint-1"  # ties keep the first
    saved = json.loads((best / "trainer_state.json").read_text())
    assert saved["best_model_checkpoint"] == str(best)
    assert not (best.parent / PARTIAL_CHECKPOINTS).exists()


@pytest.fixture
def interrupted_run(tmp_path, config) -> Path:
    """A run whose stage marker says it never finished, with checkpoints 5 and 6."""
    run = tmp_path / "run"
    assert main(["train", str(config), "--run-dir", str(run)]) == 0
    marker = run / "train/a_lol/stage.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "status": "running"}))
    return run


def test_an_unreadable_checkpoint_is_refused_with_what_to_do(config, interrupted_run, capsys):
    checkpoint = interrupted_run / "train/a_lol/checkpoints/checkpoint-6"
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])

    assert main(["train", str(config), "--run-dir", str(interrupted_run)]) == 2

    error = capsys.readouterr().err
    assert f"cannot resume from checkpoint {checkpoint}: model.safetensors is unreadable" in error
    assert "Delete that folder to resume from the checkpoint before it" in error
    assert "--no-resume" in error
    assert main(["train", str(config), "--run-dir", str(interrupted_run), "--no-resume"]) == 0


def test_a_damaged_value_head_names_itself_and_the_stage_that_rewrites_it(tmp_path, config, capsys):
    value_dir = tmp_path / "run" / "value"
    (value_dir / "value_head.json").write_text('{"hidden_size": 64, "num_heads": 1}')
    (value_dir / "value_head.safetensors").write_bytes(b"\x00" * 10)

    assert main(["advantage", str(config), "--run-dir", str(tmp_path / "run")]) == 2

    error = capsys.readouterr().err
    assert str(value_dir / "value_head.json") in error
    assert "rerun `alol value`" in error


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_text(tmp_path / "report.json", "old")

    def crash(tmp: Path) -> None:
        tmp.write_text("half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, crash)

    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_replacing_a_folder_leaves_the_new_one_and_no_leftovers(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model/weights").write_text("old")
    (tmp_path / "model.tmp").mkdir()
    (tmp_path / "model.tmp/weights").write_text("new")

    replace_directory(tmp_path / "model.tmp", tmp_path / "model")

    assert (tmp_path / "model/weights").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
