"""`alol online`: PPO, RLOO and GRPO through TRL on alol's rewards, in the same run directory
and evaluation as the offline objectives."""

from __future__ import annotations

import importlib.metadata
import json
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from alol.cli import main
from alol.rewards import RewardError, load_reward
from alol.train.online import RewardFunctions

pytest.importorskip("trl", reason="the online methods need the [online] extra (TRL)")

REWARD_FILE = """
def politeness(prompts, responses):
    return [{"kind": 0.6 * ("happy" in r), "short": 1.0 / (1 + len(r.split()))} for r in responses]
"""


@pytest.fixture
def online_config(tmp_path, tiny_llama_dir):
    rows = [
        {
            "prompt": f"Tell me about {t}?",
            "response": f" I am happy to help with {t}.",
            "reward": 1.0,
        }
        for t in ("bread", "tea", "rain", "music", "books", "cats", "trees", "boats")
    ]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "reward.py").write_text(REWARD_FILE)
    config = {
        "reference": str(tiny_llama_dir),
        "train_data": str(tmp_path / "train.jsonl"),
        "test_data": str(tmp_path / "train.jsonl"),
        "val_fraction": 0.25,
        "reward": f"{tmp_path / 'reward.py'}:politeness",
        "run_dir": str(tmp_path / "run"),
        "max_steps": 3,
        "batch_size": 4,
        "num_generations": 2,
        "max_new_tokens": 6,
        "max_prompt_length": 16,
        "logging_steps": 1,
        "save_steps": 1,
        "learning_rate": 1e-3,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_an_online_method_logs_each_reward_component_and_its_cost(online_config, method):
    assert main(["online", str(online_config), "--method", method]) == 0

    run = online_config.parent / "run" / "train" / method
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("rewards/kind/mean" in row and "rewards/short/mean" in row for row in logged)
    cost = json.loads((run / "cost.json").read_text())
    assert cost["steps"] == 3 and cost["reward_calls"] == 3 * 4 + 1  # + the probe of components
    assert cost["generated_tokens"] > 0
    assert (run / "final" / "model.safetensors").exists()


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_a_completion_cut_at_the_budget_pays_the_missing_eos_penalty_online(online_config, method):
    """The tiny model never ends within 6 tokens: every completion pays it."""
    assert (
        main(["online", str(online_config), "--method", method, "--missing-eos-penalty", "2"]) == 0
    )

    run = online_config.parent / "run" / "train" / method
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    penalties = [row["rewards/missing_eos/mean"] for row in logged if "rewards/kind/mean" in row]
    assert penalties and all(value == -2.0 for value in penalties)


def test_the_online_missing_eos_reward_charges_only_completions_without_eos(
    tmp_path, tiny_tokenizer
):
    (tmp_path / "reward.py").write_text(REWARD_FILE)
    reward = load_reward(f"{tmp_path / 'reward.py'}:politeness")
    rewards = RewardFunctions(reward, tiny_tokenizer, ("Hi?", "Hello."), missing_eos_penalty=0.5)
    eos = tiny_tokenizer.eos_token_id

    charged = rewards.missing_eos(["Hi?", "Hi?"], completion_ids=[[7, 8, eos], [7, 8, 9]])

    assert charged == [0.0, -0.5]
    assert [f.__name__ for f in rewards.functions()] == ["kind", "short", "missing_eos"]
    assert rewards.weights == [1.0, 1.0, 1.0]
    clashing = load_reward(
        {"type": "sum", "components": [{"spec": "safety", "name": "missing_eos"}]}
    )
    with pytest.raises(RewardError, match="a component named 'missing_eos'"):
        RewardFunctions(clashing, tiny_tokenizer, ("Hi?", "Hello."), missing_eos_penalty=0.5)


def test_ppo_trains_on_a_reward_model_that_shares_the_policys_tokenizer(
    online_config, tiny_llama_dir
):
    reward_model = ["--reward-model", str(tiny_llama_dir), "--reward-model-epochs", "1"]
    assert (
        main(["reward-model", str(online_config), *reward_model, "--model", str(tiny_llama_dir)])
        == 0
    )
    config = yaml.safe_load(online_config.read_text())
    del config["reward"]
    online_config.write_text(yaml.safe_dump(config))

    assert main(["online", str(online_config), "--method", "ppo", *reward_model[:2]]) == 0

    run = online_config.parent / "run" / "train" / "ppo"
    assert (run / "final" / "model.safetensors").exists()
    assert json.loads((run / "cost.json").read_text())["reward_calls"] == 3 * 4


def test_ppo_refuses_a_reward_it_cannot_feed_token_ids(online_config, capsys):
    assert main(["online", str(online_config), "--method", "ppo"]) == 2
    assert "ppo needs a sequence-classifier reward model" in capsys.readouterr().err


def test_eval_compares_an_online_model_with_the_offline_ones(online_config):
    assert main(["online", str(online_config), "--method", "grpo", "--max-steps", "1"]) == 0

    assert main(["eval", str(online_config), "--objectives", "grpo"]) == 0

    comparison = (online_config.parent / "run" / "eval" / "comparison.md").read_text()
    assert "| grpo |" in comparison and "π_ref" in comparison


def test_eval_refuses_an_online_model_trained_from_another_pi_ref(
    online_config, tiny_llama_dir, tmp_path, capsys
):
    assert main(["online", str(online_config), "--method", "grpo", "--max-steps", "1"]) == 0
    other = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    other.save_pretrained(tmp_path / "other")
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(tmp_path / "other")

    args = [
        "eval",
        str(online_config),
        "--objectives",
        "grpo",
        "--reference",
        str(tmp_path / "other"),
    ]
    assert main(args) != 0

    assert "grpo/final was trained from another π_ref" in capsys.readouterr().err


def test_a_killed_online_run_resumes_from_its_last_checkpoint(online_config, caplog):
    command = [sys.executable, "-m", "alol.cli", "online", str(online_config), "--method", "grpo"]
    command += ["--max-steps", "6"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = online_config.parent / "run" / "train" / "grpo" / "checkpoints" / "checkpoint-2"
    deadline = time.monotonic() + 180
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before the kill"

    caplog.set_level("INFO")
    assert main(["online", str(online_config), "--method", "grpo", "--max-steps", "6"]) == 0

    assert "resuming from" in caplog.text
    cost = json.loads((checkpoint.parents[1] / "cost.json").read_text())
    assert cost["steps"] == 6 and cost["reward_calls"] == 6 * 4 + 1  # the whole run's, not the rest


def test_without_trl_the_error_names_the_install_command(online_config, monkeypatch, capsys):
    real = importlib.metadata.version

    def version(name):
        if name == "trl":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert main(["online", str(online_config), "--method", "grpo"]) == 2
    assert 'pip install -e ".[online]"' in capsys.readouterr().err


def test_train_points_an_online_method_to_alol_online(online_config, capsys):
    assert main(["train", str(online_config), "--objective", "grpo"]) == 2
    assert "alol online --method grpo" in capsys.readouterr().err
