"""TRL's DPOTrainer on the same HH-length pairs, the baseline beside alol's steps; run in a fresh
process, through `throughput.py --trl-worker`, so it does not share the device's memory with
the other cases.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from bench.common import PeakMemory, run_module, synchronize
from bench.throughput.cases import BenchConfig
from bench.throughput.hh_batches import EOS_ID, FIRST_WORD_ID, PAD_ID, VOCAB_SIZE
from bench.throughput.steps import build_model

ENTRY_POINT = "bench.throughput"
"""The module whose `--trl-worker` runs `trl_dpo`."""


def trl_version() -> str | None:
    try:
        import trl
    except ImportError:
        return None
    return trl.__version__


def word_tokenizer():
    """Token i is the word `t{i}` and splits on spaces: texts with exact token counts for TRL,
    which tokenizes its own dataset."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": PAD_ID, "<unk>": 1, "</s>": EOS_ID, "<s>": 3}
    vocab |= {f"t{i}": i for i in range(FIRST_WORD_ID, VOCAB_SIZE)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        bos_token="<s>",
        unk_token="<unk>",
    )


def trl_dpo(config: BenchConfig, pairs: list[list[int]]) -> dict:
    """TRL's DPOTrainer with precomputed reference log-probs on the same HH-length pairs:
    the precompute's wall time, then one epoch of `warmup + steps` steps timed from the end of
    the warm-up. Tokens are counted by wrapping TRL's collator."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    rng = np.random.default_rng(config.seed + 3)
    count = config.batch_size * (config.warmup + config.steps)
    drawn = [pairs[i] for i in rng.choice(len(pairs), count)]

    def words(n: int) -> str:
        return "".join(f"t{i} " for i in rng.integers(FIRST_WORD_ID, VOCAB_SIZE, n))

    rows = [
        {"prompt": words(p), "chosen": words(c - 1), "rejected": words(r - 1)} for p, c, r in drawn
    ]
    model = build_model(config).to(torch.bfloat16 if config.precision == "bf16" else torch.float32)
    step_times: list[float] = []
    batch_tokens: list[int] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            synchronize(config.device)
            step_times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as output_dir:
        args = DPOConfig(
            output_dir=output_dir,
            per_device_train_batch_size=config.batch_size,
            precompute_ref_log_probs=True,
            precompute_ref_batch_size=config.batch_size,
            max_length=config.max_prompt_length + config.max_response_length,
            num_train_epochs=1,
            learning_rate=1e-5,
            max_grad_norm=1.0,
            bf16=config.precision in ("autocast", "bf16"),
            gradient_checkpointing=config.gradient_checkpointing,
            logging_steps=10**6,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            seed=config.seed,
        )
        start = time.perf_counter()
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=word_tokenizer(),
            callbacks=[StepClock()],
        )
        setup_s = time.perf_counter() - start
        collate = trainer.data_collator

        def counting_collator(examples):
            batch = collate(examples)
            batch_tokens.append(int(batch["attention_mask"].sum()))
            return batch

        trainer.data_collator = counting_collator
        memory = PeakMemory(config.device)
        memory.reset()
        trainer.train()
    timed = slice(config.warmup, config.warmup + config.steps)
    seconds = step_times[-1] - step_times[config.warmup - 1]
    tokens = sum(batch_tokens[timed])
    precompute_tokens = sum(2 * p + c + r for p, c, r in drawn)
    return {
        "seconds_per_step": seconds / config.steps,
        "tokens_per_s": tokens / seconds,
        "examples_per_s": config.batch_size * config.steps / seconds,
        "peak_memory_mib": memory.peak_mib(),
        "setup_s": setup_s,
        "setup_tokens_per_s": precompute_tokens / setup_s,
        "setup_note": "DPOTrainer construction: tokenizing the dataset and the reference precompute",
        "flops_per_token_factor": 6,
    }


def trl_in_subprocess(config: BenchConfig, pairs_path: Path, timeout_s: float) -> dict:
    """TRL in a fresh process, so its model and optimizer do not share memory with ours."""
    arguments = [
        "--device",
        config.device,
        "--trl-worker",
        json.dumps(asdict(config)),
        str(pairs_path),
    ]
    try:
        result = run_module(ENTRY_POINT, *arguments, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {timeout_s:.0f} s"}
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-25:] or ["failed"]
        return {"error": tail[-1], "stderr_tail": tail}  # the last line names the exception
    return json.loads(result.stdout.strip().splitlines()[-1])
