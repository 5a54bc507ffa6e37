"""Stage 4b, online RL (`alol online`): reads π_ref, the training prompts and the reward, trains
PPO, RLOO or GRPO through TRL (`alol.train.online`), and writes `run_dir/train/<method>/`:
checkpoints, metrics.jsonl, cost.json (reward calls, generated tokens, wall time), stage.json
and the `final/` model, where `alol eval` finds it beside the offline objectives'.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

from transformers.trainer_callback import ProgressCallback

from alol.atomic import replace_directory, write_json
from alol.choices import ONLINE_METHODS
from alol.config import PipelineConfig
from alol.data.tokenize import encode_prompt
from alol.distributed import on_main_process
from alol.errors import AlolError
from alol.fingerprint import fingerprint_of
from alol.pipeline.inputs import load_tokenizer, render, stage_inputs, unique_prompts
from alol.pipeline.settings import (
    lora_config,
    lora_kwargs,
    online_kwargs,
    result_settings,
    tokenization,
)
from alol.pipeline.stage import finish_stage, running_stage, stage_done
from alol.pipeline.trainer_setup import MetricsFileCallback, train_or_resume
from alol.reports.metrics import counted
from alol.reports.plots import plot_training_curves
from alol.train.checkpoints import AtomicCheckpoints
from alol.train.online import OnlineCost, RewardFunctions, ppo_reward_model, require_trl
from alol.train.precision import placed_precision
from alol.train.progress import QuietProgressCallback

logger = logging.getLogger(__name__)


def run_online(cfg: PipelineConfig, method: str) -> Path:
    """Train `method` online from π_ref; returns the folder of the final model."""
    if method not in ONLINE_METHODS:
        raise AlolError(
            f"unknown online method {method!r}; choose one of {', '.join(ONLINE_METHODS)}"
        )
    require_trl()
    out = cfg.root / "train" / method
    inputs = stage_inputs(cfg, training=False, decoding=True)
    if inputs.reward_spec is None:
        raise AlolError(
            f"{method} scores its own samples, so it needs a reward (--reward, or --reward-model "
            "to fit one on the data's scores)"
        )
    ref = inputs.reference
    tokenizer = load_tokenizer(ref)
    prompts = _training_prompts(cfg, tokenizer, inputs.splits.train)
    kwargs = online_kwargs(cfg, method, out / "checkpoints")
    fingerprint = fingerprint_of(
        "online",
        method,
        inputs.reference_fingerprint,
        prompts,
        inputs.reward_fingerprint,
        result_settings(kwargs),
        lora_kwargs(cfg),
        tokenization(cfg),
        # named only when on, so runs finished before the setting existed stay up to date
        *([{"missing_eos_penalty": cfg.missing_eos_penalty}] if cfg.missing_eos_penalty else []),
    )
    if stage_done(out, fingerprint):
        logger.info("online %s: up to date (%s)", method, out)
        return out / "final"
    with running_stage(out, fingerprint, "online"):
        probe = (prompts[0], inputs.train_pairs[0].response)
        rewards = RewardFunctions(
            inputs.load_reward(),
            tokenizer,
            probe,
            cfg.reward_timeout,
            # TRL's PPO charges the penalty itself (its config's missing_eos_penalty)
            None if method == "ppo" else cfg.missing_eos_penalty,
        )
        trainer = _trainer(cfg, method, ref, tokenizer, prompts, rewards, kwargs, out)
        if trainer.pop_callback(ProgressCallback) is not None:
            trainer.add_callback(QuietProgressCallback)
        logger.info(
            "online %s: %s, %s, through TRL",
            method,
            counted(len(prompts), "prompt"),
            counted(cfg.max_steps, "step"),
        )
        started = time.perf_counter()
        if method == "ppo":  # TRL's PPO loop has no resume: a stopped run starts over
            trainer.train()
        else:
            train_or_resume(trainer, out, cfg.resume)
        cost = {
            "method": method,
            "reward_calls": rewards.cost.reward_calls,
            "generated_tokens": rewards.cost.generated_tokens,
            "seconds": time.perf_counter() - started,
            "steps": trainer.state.global_step,
        }
        if method == "ppo":  # TRL's PPO scores its episodes with the reward model itself
            episodes = kwargs["total_episodes"]
            cost.update(
                reward_calls=episodes,
                generated_tokens=episodes * kwargs["response_length"],
                generated_tokens_is_upper_bound=True,
            )

        def save() -> None:
            tmp = out / "final.tmp"
            trainer.save_model(str(tmp))
            tokenizer.save_pretrained(tmp)
            replace_directory(tmp, out / "final")
            write_json(out / "cost.json", cost)
            plot_training_curves(out / "metrics.jsonl", out / "train_curves.png")

        on_main_process(save)
        finish_stage(out, fingerprint, "online", reference=inputs.reference_fingerprint, **cost)
    logger.info(
        "online %s: model saved to %s; %d responses scored, %d tokens generated, %.0f s (cost.json)",
        method,
        out / "final",
        cost["reward_calls"],
        cost["generated_tokens"],
        cost["seconds"],
    )
    return out / "final"


COST_FILE = "alol_online_cost.json"


class CostedCheckpoints(AtomicCheckpoints):
    """Mixed into TRL's RLOO and GRPO trainers: checkpoints appear atomically and each keeps
    the cost so far, so a resumed run reports the whole run's cost."""

    def __init__(self, cost: OnlineCost, *args, **kwargs):
        self.cost = cost
        super().__init__(*args, **kwargs)

    def _add_to_checkpoint(self, folder: Path) -> None:
        write_json(folder / COST_FILE, asdict(self.cost))

    def train(self, resume_from_checkpoint=None, **kwargs):
        if resume_from_checkpoint:
            spent = json.loads((Path(resume_from_checkpoint) / COST_FILE).read_text())
            self.cost.reward_calls, self.cost.generated_tokens = (
                spent["reward_calls"],
                spent["generated_tokens"],
            )
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)


def _training_prompts(cfg: PipelineConfig, tokenizer, records: list) -> list[str]:
    """The distinct prompts of `records`, rendered and cut to max_prompt_length tokens from the
    left, as the offline objectives see them."""
    texts = [render(cfg, prompt, tokenizer) for prompt in unique_prompts(records)]
    return [
        tokenizer.decode(encode_prompt(tokenizer, text, cfg.max_prompt_length)) for text in texts
    ]


def _trainer(cfg, method, ref, tokenizer, prompts, rewards, kwargs, out):
    import datasets

    kwargs = {**kwargs, **placed_precision(cfg.bf16)}
    callbacks = [MetricsFileCallback(out / "metrics.jsonl")]
    if method == "ppo":
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
        from trl.experimental.ppo import PPOConfig, PPOTrainer

        reward_model = ppo_reward_model(rewards.reward, tokenizer)
        value_model = AutoModelForSequenceClassification.from_pretrained(
            reward_model.name_or_path, num_labels=1
        )
        ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        tokenizer.padding_side = "left"
        return PPOTrainer(
            args=PPOConfig(**kwargs),
            processing_class=tokenizer,
            model=AutoModelForCausalLM.from_pretrained(ref),
            ref_model=None if cfg.lora else AutoModelForCausalLM.from_pretrained(ref),
            reward_model=reward_model,
            value_model=value_model,
            train_dataset=datasets.Dataset.from_dict({"input_ids": ids}),
            peft_config=lora_config(cfg),
            callbacks=callbacks,
        )
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    config_class, trl_trainer = {
        "rloo": (RLOOConfig, RLOOTrainer),
        "grpo": (GRPOConfig, GRPOTrainer),
    }[method]
    trainer_class = type(f"Alol{trl_trainer.__name__}", (CostedCheckpoints, trl_trainer), {})
    if cfg.batch_size % cfg.num_generations:
        raise AlolError(
            f"{method}: batch_size ({cfg.batch_size}) must be a multiple of num_generations "
            f"({cfg.num_generations}): each step scores whole groups of a prompt's samples"
        )
    return trainer_class(
        rewards.cost,
        model=str(ref),
        reward_funcs=rewards.functions(),
        args=config_class(**kwargs, reward_weights=rewards.weights),
        train_dataset=datasets.Dataset.from_dict({"prompt": prompts}),
        processing_class=tokenizer,
        peft_config=lora_config(cfg),
        callbacks=callbacks,
    )
