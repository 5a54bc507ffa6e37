"""Run the whole pipeline once under `accelerate launch` with a shipped launcher config.

Builds a small Llama and a noisy reward dataset locally, then runs
`accelerate launch --config_file examples/accelerate/<config>.yaml -m alol.cli run ...`
(value → advantage → train a_lol → eval, from an existing reference) and records whether it
finished, how long it took and the comparison table, in bench/results/.

    python -m bench.distributed_smoke --config fsdp --num-processes 1 --bf16   # one GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
import yaml

from alol.atomic import write_json
from alol.demo.tiny_models import build_tiny_model, save_tiny, train_tokenizer
from bench.common import ROOT

TOPICS = ["bread", "tea", "rain", "music", "books", "cats", "trees", "boats", "maps", "lamps"]
REWARD = """
def kind_and_on_topic(prompts, responses):
    return [
        {"kind": 0.6 * ("happy" in r), "on_topic": 0.4 * (p.split()[-1].rstrip("?") in r)}
        for p, r in zip(prompts, responses)
    ]
"""


def write_task(folder: Path) -> dict:
    rows = []
    for i, topic in enumerate(TOPICS):
        other = TOPICS[(i + 1) % len(TOPICS)]
        for response, reward in [
            (f"I am happy to help with {topic}.", 1.0),
            (f"No. {topic} is dull.", 0.4),
            (f"No. Go away from {topic}.", 0.4),
            (f"I am happy to help with {other}.", 0.6),
        ]:
            rows.append(
                {"prompt": f"Tell me about {topic}?", "response": response, "reward": reward}
            )
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "test.jsonl").write_text(
        "".join(json.dumps({"prompt": f"Tell me about {t}?"}) + "\n" for t in TOPICS)
    )
    (folder / "reward.py").write_text(REWARD)
    texts = [r["prompt"] + " " + r["response"] for r in rows]
    tokenizer = train_tokenizer(texts * 20, vocab_size=400)
    save_tiny(
        build_tiny_model(tokenizer, hidden_size=256, num_layers=4, num_heads=8),
        tokenizer,
        folder / "reference",
    )
    return {
        "reference": str(folder / "reference"),
        "train_data": str(folder / "train.jsonl"),
        "test_data": str(folder / "test.jsonl"),
        "reward": f"{folder / 'reward.py'}:kind_and_on_topic",
        "run_dir": str(folder / "run"),
        "objectives": ["a_lol"],
        "val_fraction": 0.2,
        "max_steps": 20,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "max_prompt_length": 32,
        "max_response_length": 16,
        "logging_steps": 5,
        "save_steps": 10,
        "value_epochs": 3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="fsdp", help="examples/accelerate/<config>.yaml")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    device = (
        torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    )
    with tempfile.TemporaryDirectory() as tmp:
        config = write_task(Path(tmp))
        config["bf16"] = args.bf16
        config_path = Path(tmp) / "run.yaml"
        config_path.write_text(yaml.safe_dump(config))
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(ROOT / "examples" / "accelerate" / f"{args.config}.yaml"),
            "--num_processes",
            str(args.num_processes),
            "-m",
            "alol.cli",
            "run",
            str(config_path),
        ]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        table_file = Path(config["run_dir"]) / "eval" / "comparison.md"
        table = table_file.read_text() if table_file.exists() else ""
    result = {
        "device": device,
        "launcher_config": f"examples/accelerate/{args.config}.yaml",
        "num_processes": args.num_processes,
        "bf16": args.bf16,
        "returncode": done.returncode,
        "seconds": round(elapsed, 1),
        "comparison": table,
        "log_tail": (done.stdout + done.stderr)[-3000:],
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    name = f"distributed_smoke_{args.config}_{'cuda' if torch.cuda.is_available() else 'cpu'}.json"
    write_json(Path(args.out) / name, result)
    print(result["log_tail"][-1500:])
    print(f"\n{args.config} x{args.num_processes}: returncode {done.returncode} in {elapsed:.0f} s")
    print(table)
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
