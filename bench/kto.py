"""TRL's KTOTrainer and alol's `kto` on the same data and model: seconds per training step and
peak memory, as ratios measured side by side in one run.

    python -m bench.kto                     # CPU: a 30M-parameter random Llama at HH lengths
    python -m bench.kto --device cuda --model 1b

Both get the same unpaired rows (prompt, completion, label; HH's prompt and response lengths,
cut to 256 + 64 tokens on the CPU), the same randomly initialised Llama, batches of 8, fp32,
and precompute π_ref's log-probs before training (TRL: `precompute_ref_log_probs=True`), so
neither keeps a reference model in memory while it trains. Each trainer runs in a fresh
process, twice, in alternating order; the figures are medians of the timed steps. Writes
bench/results/kto_<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from bench.common import PeakMemory, device_name, run_module, synchronize, write_results
from bench.throughput.trl_baseline import word_tokenizer

BENCH = Path(__file__).resolve().parent
VOCAB_SIZE = 32_000
FIRST_WORD_ID = 4
SHAPES = {
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4),
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32),
}  # fmt: skip


@dataclass(frozen=True)
class Setting:
    device: str = "cpu"
    model: str = "small"
    batch_size: int = 8
    warmup: int = 2
    steps: int = 8
    max_prompt_length: int = 256
    max_response_length: int = 64
    seed: int = 0


def rows(setting: Setting) -> list[dict]:
    """Unpaired rows whose prompts and completions have HH's token counts (word `t<i>` is token
    i of the word tokenizer), half of them desirable."""
    lengths = json.loads((BENCH / "hh_lengths.json").read_text())["pairs"]
    rng = np.random.default_rng(setting.seed)
    count = setting.batch_size * (setting.warmup + setting.steps)
    drawn = [lengths[i] for i in rng.choice(len(lengths), count)]

    def words(n: int) -> str:
        return " ".join(f"t{i}" for i in rng.integers(FIRST_WORD_ID, VOCAB_SIZE, n))

    return [
        {
            "prompt": words(min(prompt, setting.max_prompt_length)),
            "completion": " " + words(min(response, setting.max_response_length) - 1),
            "label": bool(i % 2),
        }
        for i, (prompt, response, _) in enumerate(drawn)
    ]


def build_model(setting: Setting):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(setting.seed)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE, tie_word_embeddings=False, pad_token_id=0, eos_token_id=2,
        max_position_embeddings=setting.max_prompt_length + setting.max_response_length + 8,
        **SHAPES[setting.model],
    )  # fmt: skip
    with torch.device(setting.device):
        return LlamaForCausalLM(config)


def step_clock(setting: Setting, times: list[float]):
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            synchronize(setting.device)
            times.append(time.perf_counter())

    return StepClock()


def run_trl(setting: Setting, output_dir: str) -> dict:
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    times: list[float] = []
    args = KTOConfig(
        output_dir=output_dir, per_device_train_batch_size=setting.batch_size,
        max_steps=setting.warmup + setting.steps, learning_rate=1e-5, bf16=False,
        use_cpu=setting.device == "cpu", precompute_ref_log_probs=True,
        max_length=setting.max_prompt_length + setting.max_response_length + 1,
        logging_steps=10**6, save_strategy="no", report_to="none", disable_tqdm=True,
    )  # fmt: skip
    started = time.perf_counter()
    trainer = KTOTrainer(
        model=build_model(setting),
        args=args,
        train_dataset=Dataset.from_list(rows(setting)),
        processing_class=word_tokenizer(),
        callbacks=[step_clock(setting, times)],
    )
    return _train(setting, trainer, times, time.perf_counter() - started)


def run_alol(setting: Setting, output_dir: str) -> dict:
    from alol.train import AlolConfig, AlolTrainer

    times: list[float] = []
    args = AlolConfig(
        output_dir=output_dir, objective="kto", per_device_train_batch_size=setting.batch_size,
        max_steps=setting.warmup + setting.steps, learning_rate=1e-5,
        max_prompt_length=setting.max_prompt_length,
        max_response_length=setting.max_response_length, string_prompts="raw",
        logging_steps=10**6, save_strategy="no", report_to="none", disable_tqdm=True,
    )  # fmt: skip
    started = time.perf_counter()
    trainer = AlolTrainer(
        build_model(setting),
        args,
        train_dataset=rows(setting),
        processing_class=word_tokenizer(),
        callbacks=[step_clock(setting, times)],
    )
    return _train(setting, trainer, times, time.perf_counter() - started)


def _train(setting: Setting, trainer, times: list[float], setup_s: float) -> dict:
    """Train; the median step time after the warm-up steps and the peak memory of training."""
    memory = PeakMemory(setting.device)
    memory.reset()
    start = time.perf_counter()
    trainer.train()
    steps = np.diff([start, *times])[setting.warmup :]
    return {
        "seconds_per_step": float(np.median(steps)),
        "peak_memory_mib": memory.peak_mib(),
        "training_memory_mib": memory.peak_above_baseline_mib(),
        "setup_s": setup_s,
    }


WORKERS = {"trl": run_trl, "alol": run_alol}


def in_subprocess(name: str, setting: Setting) -> dict:
    """One trainer in a fresh process, so neither shares memory with the other."""
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    result = run_module("bench.kto", "--worker", name, json.dumps(asdict(setting)), env=environment)
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def markdown(result: dict) -> str:
    lines = [
        "# KTO: alol's `kto` beside TRL's KTOTrainer",
        "",
        f"`python -m bench.kto` on {result['device']} (torch {result['versions']['torch']}, "
        f"transformers {result['versions']['transformers']}, TRL {result['versions']['trl']}); "
        f"setting {json.dumps(result['setting'])}. Both precompute π_ref's log-probs and keep no "
        "reference model; medians of the timed steps over two runs each, in alternating order.",
        "",
        "| trainer | seconds per step | peak memory (MiB) | training memory above the start (MiB) | setup s |",
        "|---|---|---|---|---|",
    ]
    for name in ("trl", "alol"):
        r = result[name]
        lines.append(
            f"| {name} | {r['seconds_per_step']:.3f} | {r['peak_memory_mib']:.0f} | "
            f"{r['training_memory_mib']:.0f} | {r['setup_s']:.1f} |"
        )
    ratios = result["ratios"]
    lines += [
        "",
        f"alol / TRL: {ratios['seconds_per_step']:.2f}× the time per step, "
        f"{ratios['peak_memory']:.2f}× the peak memory, {ratios['training_memory']:.2f}× the "
        "training memory.",
        "",
        "Where the difference comes from: TRL projects every position of each sequence, prompt "
        "included, onto the vocabulary (for the completions and again for the KL pairs) and takes "
        "the entropy of all those logits for its metrics; alol projects only the response "
        "positions (`alol.models.logprobs`). On this small model the vocabulary projection "
        "(hidden 256 × 32,000) costs more than its four decoder layers per token, and HH prompts "
        "are several times longer than their responses, so the saving is large here; on a 1B "
        "model the projection is a few percent of the compute and the gap narrows accordingly "
        "(run `--device cuda --model 1b` to measure it).",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="small", choices=SHAPES)
    parser.add_argument("--worker", choices=WORKERS)
    parser.add_argument("setting", nargs="?")
    args = parser.parse_args()
    if args.worker:
        setting = Setting(**json.loads(args.setting))
        with tempfile.TemporaryDirectory() as output_dir:
            print(json.dumps(WORKERS[args.worker](setting, output_dir)))
        return 0
    setting = Setting(device=args.device, model=args.model)
    runs: dict[str, list[dict]] = {"trl": [], "alol": []}
    for order in (("trl", "alol"), ("alol", "trl")):
        for name in order:
            runs[name].append(in_subprocess(name, setting))
    merged = {
        name: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for name, results in runs.items()
    }
    import transformers
    import trl

    result = {
        "device": device_name(setting.device),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
        "setting": asdict(setting),
        **merged,
        "runs": runs,
        "ratios": {
            "seconds_per_step": merged["alol"]["seconds_per_step"] / merged["trl"]["seconds_per_step"],
            "peak_memory": merged["alol"]["peak_memory_mib"] / merged["trl"]["peak_memory_mib"],
            "training_memory": merged["alol"]["training_memory_mib"] / merged["trl"]["training_memory_mib"],
        },
    }  # fmt: skip
    name = f"kto_{'cuda' if setting.device.startswith('cuda') else 'cpu'}"
    write_results(name, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
