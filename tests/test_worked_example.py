"""The worked example of docs/usage.md is the shipped YAML file, and it runs as written on a CPU with a
tiny model (only the model, the data file, the run folder and the budget are swapped in)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from alol.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "hh_a_lol.yaml"


def readme_example() -> dict:
    text = (ROOT / "docs" / "usage.md").read_text(encoding="utf-8")
    section = text[text.index("## Worked example") :]
    return yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))


def test_the_readme_shows_the_shipped_file():
    shipped = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    shown = readme_example()
    assert shown.items() <= shipped.items()


def hh_rows(count: int) -> list[dict]:
    """HH/PRO-format records: a preferred and a rejected answer, each with its logit."""
    return [
        {
            "prefix": [[f"<|prompter|>Question {i} about bread?", "<|assistant|>"]] * 2,
            "suffix": [f" Bake it slowly, {i}.", " No."],
            "reward": [0.5 + (i % 5) / 5, -1.0 + (i % 3) / 3],
            "sft_index": 0,
        }
        for i in range(count)
    ]


def test_the_worked_example_runs_as_written_on_a_cpu_with_a_tiny_model(tmp_path, tiny_llama_dir):
    """bf16 (CPU autocast where the CPU has native bf16, float32 elsewhere), LoRA,
    value_from_data, the HH format, three objectives."""
    data = tmp_path / "data" / "hh" / "helpful_base.json"
    data.parent.mkdir(parents=True)
    data.write_text("".join(json.dumps(row) + "\n" for row in hh_rows(40)))
    swapped = ["--model", str(tiny_llama_dir), "--train-data", str(data)]
    swapped += ["--run-dir", str(tmp_path / "run"), "--max-steps", "2", "--save-steps", "1000"]

    assert main(["run", str(EXAMPLE), *swapped]) == 0

    run = tmp_path / "run"
    for objective in yaml.safe_load(EXAMPLE.read_text())["objectives"]:
        assert (run / "train" / objective / "final" / "adapter_config.json").exists(), objective
    stats = json.loads((run / "sft" / "stage.json").read_text())
    assert stats["examples"] == stats["data"]["train_records"]  # the preferred answer only
