"""DeepSpeed ZeRO-2 through the shipped accelerate config, on the CPU with one process: alol's
loss runs through the DeepSpeed engine and trains what plain training trains.

(Two CPU processes stop before training in transformers 5 / accelerate 1.15: their
DeepSpeed state reports one process on a CPU, so the batch size handed to DeepSpeed is half
what its two ranks check; a plain `Trainer` fails alike. On GPUs each rank is counted.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from alol.cli import main
from tests.conftest import constant_value_head

pytest.importorskip("deepspeed")

ROOT = Path(__file__).resolve().parents[1]
ROWS = [
    {"prompt": f"Tell me about {topic}?", "response": response, "reward": reward}
    for topic in ("bread", "tea", "rain", "music", "books", "cats", "trees", "boats")
    for response, reward in [
        (f"I am happy to help with {topic}.", 1.0),
        (f"No. {topic} is dull.", 0.2),
    ]
]


def config(tmp_path: Path, reference: Path, name: str) -> Path:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    run = tmp_path / name
    constant_value_head(run, reference, 0.5)
    settings = {
        "reference": str(reference),
        "train_data": str(data),
        "run_dir": str(run),
        "val_fraction": 0.25,
        "max_steps": 4,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "max_prompt_length": 16,
        "max_response_length": 10,
        "logging_steps": 1,
        "save_steps": 2,
        "scale_steps_by_positive_fraction": False,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def logged_losses(run: Path) -> list[float]:
    rows = (run / "train" / "a_lol" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(row)["loss"] for row in rows if "loss" in json.loads(row)]


@pytest.mark.slow
def test_zero2_trains_the_weights_plain_training_trains(tmp_path, tiny_llama_dir):
    plain = config(tmp_path, tiny_llama_dir, "plain")
    assert main(["train", str(plain), "--objective", "a_lol"]) == 0
    zero = config(tmp_path, tiny_llama_dir, "zero2")
    shutil.copytree(tmp_path / "plain" / "advantage", tmp_path / "zero2" / "advantage")
    launch = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ROOT / "examples" / "accelerate" / "deepspeed_zero2.yaml"),
        "--num_processes", "1",
        "-m", "alol.cli", "train", str(zero), "--objective", "a_lol",
    ]  # fmt: skip
    done = subprocess.run(launch, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    checkpoint = tmp_path / "zero2" / "train" / "a_lol" / "checkpoints" / "checkpoint-4"
    assert (checkpoint / "global_step4" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").exists()
    torch.testing.assert_close(
        logged_losses(tmp_path / "zero2"), logged_losses(tmp_path / "plain"), rtol=1e-4, atol=1e-5
    )
    final = {
        name: load_file(tmp_path / name / "train" / "a_lol" / "final" / "model.safetensors")
        for name in ("plain", "zero2")
    }
    for key, weight in final["plain"].items():
        torch.testing.assert_close(final["zero2"][key], weight, rtol=1e-4, atol=1e-5, msg=key)
