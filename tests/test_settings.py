"""Where each `PipelineConfig` setting goes: the one map to the sub-configs, derived stage
fingerprints, and every objective setting reachable from the CLI and YAML."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import typing
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

import alol
from alol.cli import build_parser, load_config, main
from alol.config import PipelineConfig
from alol.method.objectives import OBJECTIVES, ObjectiveConfig
from alol.models.reference import ReferenceConfig
from alol.pipeline import run_sft
from alol.pipeline.settings import (
    advantage_config,
    answers_reference_config,
    audit_thresholds,
    generation_config,
    load_options,
    lora_kwargs,
    online_kwargs,
    quantization,
    result_settings,
    reward_model_config,
    tokenization,
    trainer_kwargs,
    value_config,
    value_generation_config,
)
from alol.pipeline.trainer_setup import training_args, training_fingerprint_parts

OUT = Path("out")


def views(cfg: PipelineConfig) -> dict[str, object]:
    """Everything the stages build from a config, by the name of what they build."""
    return {
        "sft trainer": result_settings(trainer_kwargs(cfg, "nll", OUT, 10)),
        **{
            f"{name} trainer": result_settings(trainer_kwargs(cfg, name, OUT, 10, with_eval=True))
            for name in ("a_lol", "a_lol_kl", "r_gold", "pro", "kto")
        },
        "lora": lora_kwargs(cfg),
        "quantization": quantization(cfg),
        "precompute": asdict(advantage_config(cfg)),
        "answers reference": asdict(answers_reference_config(cfg)),
        "value head": asdict(value_config(cfg)),
        "value decoding": asdict(value_generation_config(cfg)),
        "decoding": asdict(generation_config(cfg)),
        "data loading": load_options(cfg),
        "reward model": asdict(reward_model_config(cfg)),
        "tokenization": tokenization(cfg),
        "audit": asdict(audit_thresholds(cfg)),
        **{
            f"{method} trainer": result_settings(online_kwargs(cfg, method, OUT))
            for method in ("ppo", "grpo")
        },
    }


OFFLINE = {
    "sft trainer",
    "a_lol trainer",
    "a_lol_kl trainer",
    "r_gold trainer",
    "pro trainer",
    "kto trainer",
}
OBJECTIVE_TRAINERS = OFFLINE - {"sft trainer"}
ONLINE = {"ppo trainer", "grpo trainer"}
TRAINERS = OFFLINE | ONLINE
DECODING = {"value decoding", "decoding"}

EXPECTED: dict[str, set[str]] = {
    # read by the pipeline itself (paths, splits, which stages run): no sub-config
    **dict.fromkeys(
        [
            "model",
            "reference",
            "train_data",
            "val_data",
            "test_data",
            "run_dir",
            "val_fraction",
            "train_responses",
            "reward",
            "objectives",
            "sft_max_steps",
            "scale_steps_by_positive_fraction",
            "sampling",
            "balance_groups",
            "length_neutral_advantage",
            "resume",
            "value_from_data",
            "value_estimate",
            "eval_model",
            "judges",
            "validation_judges",
            "constant_answers",
            "probe_answers",
            "refuse_paid_probes",
            "kto_label",
            "kto_threshold",
            "cut_responses",
        ],
        set(),
    ),
    # validation selects checkpoints by these; the audit flags by its thresholds
    "select_by": OBJECTIVE_TRAINERS,
    "collapse_share": OBJECTIVE_TRAINERS | {"audit"},
    "judge_drop": {"audit"},
    "distinct_2_drop": {"audit"},
    "cut_off_share": OBJECTIVE_TRAINERS | {"audit"},
    "loop_share": OBJECTIVE_TRAINERS | {"audit"},
    "empty_share": {"audit"},
    "drift_log_ratio": {"audit"},
    "data_kind": {"data loading"},
    "skip_invalid": {"data loading"},
    "hh_reward": {"data loading"},
    "seed": TRAINERS | {"value head", "reward model"} | DECODING,
    "reward_timeout": OBJECTIVE_TRAINERS | {"precompute"},
    # and the rewards of the value stage, eval and RLOO/GRPO (`alol.train.online`)
    "missing_eos_penalty": OBJECTIVE_TRAINERS | {"ppo trainer"},
    "max_prompt_length": {"precompute", "value head", "tokenization"} | DECODING,
    "max_response_length": {"precompute", "tokenization"} | DECODING | ONLINE,
    "string_prompts": {"precompute", "tokenization"},
    "max_steps": ONLINE,  # the offline stages pass their own step budget
    "batch_size": TRAINERS,
    "gradient_accumulation_steps": TRAINERS,
    "max_tokens_per_batch": OFFLINE,
    "sample_in_passes": OFFLINE,
    "disable_dropout": OFFLINE,
    "learning_rate": TRAINERS,
    "lr_scheduler_type": TRAINERS,
    "warmup_steps": TRAINERS,
    "weight_decay": OFFLINE,
    "max_grad_norm": TRAINERS,
    "clip": {"a_lol trainer"},
    "beta": {"a_lol_kl trainer", "kto trainer"},
    "desirable_weight": {"kto trainer"},
    "undesirable_weight": {"kto trainer"},
    "gold_floor": {"r_gold trainer"},
    "pro_sft_weight": {"pro trainer"},
    "bf16": TRAINERS | {"reward model", "precompute"},  # the reference runs in bf16 too
    "fp16": TRAINERS,
    # speed and memory only: the same numbers, so outside the trainers' fingerprints
    "gradient_checkpointing": set(),
    "compile_layers": {"precompute"},
    "compile_mode": {"precompute"},
    "pad_to_multiple_of": set(),
    "packing": set(),
    "vocab_chunk_size": {"precompute", "answers reference"},
    "lora": {"lora"},
    "load_in_4bit": {"quantization", "precompute"},
    "lora_r": {"lora", "reward model"},
    "lora_alpha": {"lora", "reward model"},
    "lora_dropout": {"lora", "reward model"},
    "lora_target_modules": {"lora", "reward model"},
    "reward_model": {"reward model"},
    "reward_model_targets": {"reward model"},
    "reward_model_inputs": {"reward model"},
    "reward_model_epochs": {"reward model"},
    "reward_model_learning_rate": {"reward model"},
    "reward_model_batch_size": {"reward model"},
    "reward_model_max_length": {"reward model"},
    "reward_model_lora": {"reward model"},
    "reward_model_off_prompt_weight": {"reward model"},
    "logging_steps": set(),
    "save_steps": set(),
    "save_total_limit": set(),
    "eval_steps": OBJECTIVE_TRAINERS,
    "report_to": set(),
    "precompute_batch_size": {"precompute", "answers reference"},
    "share_prompts": {"precompute", "answers reference"},
    "value_samples": {"value decoding"},
    "num_generations": {"grpo trainer"},
    "online_beta": ONLINE,
    "value_epochs": {"value head"},
    "value_learning_rate": {"value head"},
    "value_max": {"value head"},
    "max_new_tokens": DECODING | ONLINE,
    "do_sample": {"decoding"},
    "temperature": DECODING | ONLINE,
    "top_p": DECODING | {"grpo trainer"},
    "generation_batch_size": DECODING,
}

CHANGED_VALUES = {
    "objectives": ["nll"],
    "reward": "safety",
    "data_kind": "hh",
    "hh_reward": "raw",
    "lr_scheduler_type": "cosine",
    "report_to": "tensorboard",
    "lora_target_modules": "q_proj",
    "compile_mode": "reduce-overhead",
    "clip": 0.5,
    "value_samples": 3,
    "sampling": "reward",
    "train_responses": "all",
    "string_prompts": "raw",
    "value_max": 2.0,
    "value_estimate": "per_prompt",
    "reward_model_targets": "preferences",
    "reward_model_inputs": "concat",
    "temperature": 0.7,
    "top_p": 0.9,
    "judges": ["safety"],
    "select_by": "reward=0.5",
    "collapse_share": 0.5,
    "kto_label": "reward_above",
    "cut_responses": "drop",
    "kto_threshold": 0.5,
}


def changed(name: str, value: object, annotation: object) -> object:
    """Another valid value for the setting `name`."""
    if name in CHANGED_VALUES:
        return CHANGED_VALUES[name]
    members = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    kind = members[0]
    if kind is bool:
        return not value
    if kind is int:
        return (value or 1) + 1
    if kind is float:
        return (value or 0.0) + 0.25
    return f"{value}-other"


def test_every_pipeline_setting_reaches_exactly_the_sub_configs_that_read_it(monkeypatch):
    """The table above is the map: a setting changes what the stages it lists build, and no
    other. Settings the pipeline reads itself change none (they choose files and stages).
    (On a CPU with native bf16, as this test assumes, bf16 reaches the reference too.)"""
    monkeypatch.setattr("alol.train.precision.cpu_has_native_bf16", lambda: True)
    hints = typing.get_type_hints(PipelineConfig)
    fields = {f.name: f for f in dataclasses.fields(PipelineConfig)}
    assert set(EXPECTED) == set(fields), "every PipelineConfig field is listed exactly once"
    base = PipelineConfig(lora=True, eval_steps=5, reward_model="minilm", reward_model_lora=True)
    before = views(base)
    for name in fields:
        value = changed(name, getattr(base, name), hints[name])
        after = views(dataclasses.replace(base, **{name: value}))
        reached = {view for view in before if before[view] != after[view]}
        assert reached == EXPECTED[name], name


def test_changing_the_clip_leaves_the_reference_sft_stage_up_to_date(tmp_path, tiny_llama_dir):
    """`--clip` is read by the importance-weighted objectives only; the sft stage's fingerprint
    (built from what its trainer reads) does not hold it, so π_ref is not retrained."""
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "Hi?", "response": " Hello.", "reward": 1.0}\n' * 4)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            dict(
                model=str(tiny_llama_dir),
                train_data=str(data),
                val_fraction=0.0,
                run_dir=str(tmp_path / "run"),
                max_steps=1,
                batch_size=2,
                save_steps=10,
            )
        )
    )
    assert main(["sft", str(config)]) == 0
    marker = tmp_path / "run" / "sft" / "stage.json"
    written = marker.stat().st_mtime_ns

    run_sft(load_config(str(config), {"clip": 0.5, "beta": 0.3}))  # what `alol run --clip` does

    assert marker.stat().st_mtime_ns == written
    assert not list((tmp_path / "run").glob("sft.stale-*"))


def test_a_training_fingerprint_holds_only_the_hyperparameters_of_its_objective():
    base = PipelineConfig()

    def parts(objective: str, **changes) -> dict:
        cfg = dataclasses.replace(base, **changes)
        return training_fingerprint_parts(cfg, objective, OUT, 10, with_eval=False)

    assert parts("nll", clip=0.5, beta=0.3, gold_floor=0.2) == parts("nll")
    assert parts("a_lol", clip=0.5) != parts("a_lol")
    assert parts("a_lol", beta=0.3) == parts("a_lol")
    assert parts("dpo", beta=0.3) != parts("dpo")


def test_a_setting_added_later_leaves_the_fingerprints_of_runs_that_leave_it_off_alone():
    """QLoRA came after runs whose stages took hours: with it off, those stages and their
    cached reference tables stay up to date; with it on, both change."""
    cfg = PipelineConfig()
    off = training_fingerprint_parts(cfg, "a_lol", OUT, 10, with_eval=False)
    on = training_fingerprint_parts(
        dataclasses.replace(cfg, load_in_4bit=True, lora=True), "a_lol", OUT, 10, with_eval=False
    )
    assert "quantization" not in off
    assert on["quantization"]["load_in_4bit"] is True
    assert "load_in_4bit" not in ReferenceConfig().key_fields()
    assert ReferenceConfig(load_in_4bit=True).key_fields()["load_in_4bit"] is True


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(ObjectiveConfig)])
def test_every_objective_setting_is_a_cli_flag_and_a_yaml_key(name, tmp_path):
    """Each ObjectiveConfig field is a PipelineConfig field, an `alol train` flag and a YAML key,
    and reaches the trainer of an objective that reads it."""
    value = 0.35
    flag = "--" + name.replace("_", "-")
    parsed = vars(build_parser().parse_args(["train", flag, str(value)]))
    assert getattr(load_config(None, {name: parsed[name]}), name) == value

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({name: value}))
    from_yaml = load_config(str(config), {})
    assert getattr(from_yaml, name) == value

    reader = next(o.name for o in OBJECTIVES.values() if name in o.hyperparameters)
    args = training_args(from_yaml, reader, tmp_path / "out", max_steps=1)
    assert getattr(args.objective_config(), name) == value


def test_warmup_ratio_is_a_share_of_the_training_steps(tmp_path):
    cfg = PipelineConfig(warmup_steps=0.25)
    args = training_args(cfg, "nll", tmp_path, max_steps=40)
    assert args.get_warmup_steps(40) == 10


def config_classes() -> list[type]:
    """Every config dataclass of the package: its settings groups and its stages' configs."""
    found = []
    for module in pkgutil.walk_packages(alol.__path__, "alol."):
        if module.name.startswith("alol.demo"):
            continue  # `alol demo`'s own options (its model, folder, seed), not the pipeline's
        for obj in vars(importlib.import_module(module.name)).values():
            if (
                inspect.isclass(obj)
                and dataclasses.is_dataclass(obj)
                and obj.__module__ == module.name
                and obj.__name__.endswith(("Config", "Settings", "Thresholds"))
            ):
                found.append(obj)
    return found


def test_every_setting_has_its_default_and_help_written_once():
    """A setting is declared (default, help, range) in one config class; any other config that
    holds it takes the default and help from there (`alol.setting_checks.same_as`), so they
    cannot drift apart. PipelineConfig extends the declaring classes."""
    declared = {f.name: f for f in dataclasses.fields(PipelineConfig)}
    derived = {id(f.metadata["help"]) for f in declared.values()}
    owners = set(PipelineConfig.__mro__)
    written = {}
    for cls in config_classes():
        own = cls.__dict__.get("__annotations__", {})
        for config_field in dataclasses.fields(cls):
            name = config_field.name
            has_default = config_field.default is not dataclasses.MISSING or (
                config_field.default_factory is not dataclasses.MISSING
            )
            taken = cls not in owners and id(config_field.metadata.get("help")) in derived
            if name in declared and name in own and has_default and not taken:
                written.setdefault(name, []).append(cls.__qualname__)
    twice = {name: classes for name, classes in written.items() if len(classes) > 1}
    assert not twice, f"settings written in more than one class: {twice}"
    assert set(written) == set(declared), "every setting is written once, in some class"
