"""The pipeline end to end through the `alol` CLI on a tiny local model and noisy data."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import constant_value_head
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from alol.cli import main
from alol.config import PipelineConfig
from alol.data.formats import load_records
from alol.data.table import AdvantageTable
from alol.data.tokenize import encode_prompt
from alol.fingerprint import fingerprint_model
from alol.method.leftover import length_neutral, response_words
from alol.method.objectives import OBJECTIVES, get_objective
from alol.models.reference import sequence_logprobs_of_pairs
from alol.pipeline.inputs import (
    StageInputs,
    load_model_for_inference,
    load_tokenizer,
    render,
    stage_inputs,
    tokenize_with,
)
from alol.pipeline.settings import reference_dtype
from alol.pipeline.trainer_setup import training_args
from alol.pipeline.training_sets import training_set
from alol.reports.advantage_report import length_weighting
from alol.setting_checks import ConfigError
from alol.train import selection

TOPICS = ["bread", "tea", "rain", "music", "books", "cats", "trees", "boats"]

REWARD_FILE = '''
def politeness(prompts, responses):
    """1 for a kind answer that names the topic, less for rude or off-topic ones."""
    scores = []
    for prompt, response in zip(prompts, responses):
        topic = prompt.split()[-1].rstrip("?")
        kind = 0.6 if "happy" in response else 0.0
        on_topic = 0.4 if topic in response else 0.0
        scores.append({"kind": kind, "on_topic": on_topic})
    return scores
'''


def noisy_records() -> list[dict]:
    """Per topic: one kind answer, two rude ones, one off-topic one (rewards stored too)."""
    rows = []
    for i, topic in enumerate(TOPICS):
        prompt = f"Tell me about {topic}?"
        other = TOPICS[(i + 1) % len(TOPICS)]
        for response, reward in [
            (f"I am happy to help with {topic}.", 1.0),
            (f"No. {topic} is dull.", 0.4),
            (f"No. Go away from {topic}.", 0.4),
            (f"I am happy to help with {other}.", 0.6),
        ]:
            rows.append({"prompt": prompt, "response": response, "reward": reward})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def workspace(tmp_path, tiny_llama_dir) -> dict[str, Path]:
    data = write_jsonl(tmp_path / "train.jsonl", noisy_records())
    test = write_jsonl(
        tmp_path / "test.jsonl", [{"prompt": f"Tell me about {t}?"} for t in TOPICS[:4]]
    )
    reward = tmp_path / "reward.py"
    reward.write_text(REWARD_FILE)
    config = {
        "model": str(tiny_llama_dir),
        "train_data": str(data),
        "test_data": str(test),
        "reward": f"{reward}:politeness",
        "run_dir": str(tmp_path / "run"),
        "val_fraction": 0.25,
        "max_steps": 4,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "max_prompt_length": 32,
        "max_response_length": 12,
        "logging_steps": 1,
        "save_steps": 2,
        "value_epochs": 3,
        "generation_batch_size": 8,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return {"config": path, "run": tmp_path / "run", "data": data}


def test_run_chains_every_stage_and_writes_the_artifacts(workspace):
    assert main(["run", str(workspace["config"]), "--objectives", "a_lol", "nll"]) == 0
    run = workspace["run"]
    for artifact in [
        "sft/model/config.json",
        "value/value_head.safetensors",
        "value/value_metrics.json",
        "advantage/advantage_stats.json",
        "advantage/advantage_hist.png",
        "advantage/top_advantages.md",
        "train/a_lol/final/config.json",
        "train/a_lol/metrics.jsonl",
        "train/nll/final/config.json",
        "eval/a_lol/eval.json",
        "eval/reference/report.md",
        "eval/comparison.md",
    ]:
        assert (run / artifact).exists(), artifact
    assert not (run / "eval/reward_vs_judges.png").exists(), "no judge to draw the reward against"
    logged = [
        json.loads(line) for line in (run / "train/a_lol/metrics.jsonl").read_text().splitlines()
    ]
    assert any("importance_weight/mean" in row for row in logged)


def test_a_finished_run_is_skipped_when_nothing_changed(workspace, caplog):
    assert main(["run", str(workspace["config"]), "--objectives", "nll"]) == 0
    marker = workspace["run"] / "train/nll/stage.json"
    before = marker.stat().st_mtime_ns
    caplog.set_level("INFO")
    assert main(["run", str(workspace["config"]), "--objectives", "nll"]) == 0
    assert marker.stat().st_mtime_ns == before
    assert "up to date" in caplog.text


@pytest.mark.parametrize("objective", ["nll", "dpo", "a_lol"])
def test_a_finished_training_stage_reads_its_data_once_and_loads_no_weights(
    workspace, tiny_llama_dir, monkeypatch, caplog, objective
):
    """Whether a stage is up to date is decided from files: the data, π_ref's files, the
    cached tables. A rerun reads the training file once and never loads a model."""
    config = str(workspace["config"])
    constant_value_head(workspace["run"], tiny_llama_dir, value=0.5)
    args = ["train", config, "--reference", str(tiny_llama_dir), "--objective", objective]
    assert main([*args, "--max-steps", "2"]) == 0
    reads = []
    monkeypatch.setattr(
        "alol.pipeline.inputs.load_records",
        lambda path, **options: reads.append(path) or load_records(path, **options),
    )
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse_to_load)
    caplog.set_level("INFO")

    assert main([*args, "--max-steps", "2"]) == 0

    assert f"train {objective}: up to date" in caplog.text
    assert reads == [str(workspace["data"])]


def refuse_to_load(*args, **kwargs):
    raise AssertionError("a model was loaded")


def test_training_uses_exactly_the_positive_advantage_examples(workspace):
    config = str(workspace["config"])
    assert main(["sft", config]) == 0
    assert main(["value", config]) == 0
    assert main(["advantage", config]) == 0
    advantage_dir = workspace["run"] / "advantage"
    stats = json.loads((advantage_dir / "advantage_stats.json").read_text())
    table = AdvantageTable.load(advantage_dir / stats["table"])  # the table the stats are of
    cfg = PipelineConfig(**yaml.safe_load(workspace["config"].read_text()))
    inputs = stage_inputs(cfg)
    training = training_set(inputs, get_objective("a_lol"))
    dataset = training.build(tokenize_with(cfg, load_tokenizer(inputs.reference)))
    weights, fraction = training.weights, training.fraction_positive
    trained = sorted(example.index for example in dataset.examples)
    assert trained == sorted(np.flatnonzero(table.advantage > 0).tolist())
    np.testing.assert_allclose(weights, table.advantage[trained])
    assert fraction == pytest.approx(len(trained) / len(table)), "the share actually trained on"


def test_cut_responses_drop_leaves_records_with_a_too_long_response_out_of_sft_and_training(
    workspace, tiny_llama_dir, caplog
):
    """With max_response_length at 24 tokens the rambling answer to every topic (48) is cut by
    default and learned without its EOS; with `drop` neither SFT nor A-LoL's table holds it."""
    rambling = "I am happy to help, and here is more and more and more and more about it all."
    rows = [*noisy_records()]
    rows += [{"prompt": f"Tell me about {t}?", "response": rambling, "reward": 1.0} for t in TOPICS]
    write_jsonl(workspace["data"], rows)
    settings = {
        **yaml.safe_load(workspace["config"].read_text()),
        "reference": str(tiny_llama_dir),
        "max_response_length": 24,
    }
    caplog.set_level("WARNING")

    kept = stage_inputs(PipelineConfig(**settings)).train_pairs
    dropped = stage_inputs(PipelineConfig(**settings, cut_responses="drop")).train_pairs

    assert sum(r.response == rambling for r in kept) == len(kept) // 5
    assert [r for r in kept if r.response != rambling] == dropped
    assert f"left out {len(kept) // 5} of {len(kept)} training records" in caplog.text
    config = str(workspace["config"])
    args = ["--cut-responses", "drop", "--max-response-length", "24", "--max-steps", "1"]
    assert main(["sft", config, *args]) == 0
    sft = json.loads((workspace["run"] / "sft" / "stage.json").read_text())
    assert sft["examples"] == len(dropped) and sft["responses_cut"] == 0


def test_cut_responses_drop_refuses_to_leave_no_training_record(workspace, tiny_llama_dir, capsys):
    config = str(workspace["config"])
    args = ["sft", config, "--cut-responses", "drop", "--max-response-length", "2"]

    assert main(args) != 0
    assert "cut_responses: drop leaves no training record" in capsys.readouterr().err


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_every_objective_trains_through_the_cli(workspace, tiny_llama_dir, objective):
    """With an existing reference (no sft); the advantage objectives fit V first."""
    config = str(workspace["config"])
    if OBJECTIVES[objective].needs_advantage:
        assert main(["value", config, "--reference", str(tiny_llama_dir)]) == 0
    args = [
        "train",
        config,
        "--reference",
        str(tiny_llama_dir),
        "--objective",
        objective,
        "--max-steps",
        "6",
        "--no-scale-steps-by-positive-fraction",
    ]
    assert main(args) == 0
    assert_trained(workspace["run"] / "train" / objective, tiny_llama_dir)


def assert_trained(stage: Path, reference: Path) -> None:
    """The final model's weights differ from the reference it started from, and the loss
    of the last logged step is below the first's."""
    final = load_file(stage / "final" / "model.safetensors")
    start = load_file(reference / "model.safetensors")
    assert any(not torch.equal(final[name], start[name]) for name in final), "weights moved"
    rows = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in rows if "loss" in row]
    half = len(losses) // 2
    assert np.mean(losses[half:]) < np.mean(losses[:half]), f"the loss fell: {losses}"


@pytest.mark.parametrize("command", [["advantage"], ["train", "--objective", "a_lol"]])
def test_advantages_without_a_value_head_are_refused_with_the_command_that_fits_it(
    workspace, tiny_llama_dir, capsys, command
):
    """V = 0 would report every rewarded example as better than π_ref: the audit, emptied."""
    args = [command[0], str(workspace["config"]), "--reference", str(tiny_llama_dir), *command[1:]]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "no value head" in error and "alol value" in error


def test_help_explains_every_option():
    out = subprocess.run(
        [sys.executable, "-m", "alol.cli", "train", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    for flag in ["--objectives", "--clip", "--sampling", "--max-steps", "--lora", "--resume"]:
        assert flag in out.stdout
    assert "reward-GOLD" in out.stdout


def test_a_bad_config_key_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_stepz: 3\n")
    assert main(["train", str(bad)]) == 2
    assert "max_stepz" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("bf16", "device", "native_cpu_bf16", "expected"),
    [
        (True, "cuda", False, "bfloat16"),
        (True, "cuda:1", False, "bfloat16"),
        (True, "mps", False, "bfloat16"),
        (True, "cpu", True, "bfloat16"),
        (True, "cpu", False, "float32"),
        (False, "cuda", True, "float32"),
        (False, "cpu", True, "float32"),
    ],
)
def test_the_reference_runs_in_bf16_when_training_in_bf16_where_bf16_is_native(
    bf16, device, native_cpu_bf16, expected, monkeypatch
):
    monkeypatch.setattr("alol.train.precision.cpu_has_native_bf16", lambda: native_cpu_bf16)
    assert reference_dtype(bf16, device) == expected


def test_the_inference_model_is_loaded_in_the_dtype_asked_for(tiny_llama_dir):
    model, _ = load_model_for_inference(tiny_llama_dir, "bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    model, _ = load_model_for_inference(tiny_llama_dir)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_validation_decodes_and_scores_during_training_and_keeps_the_best(
    workspace, tiny_llama_dir
):
    """--eval-steps decodes the held-out prompts, logs eval_reward per component and selects on it."""
    config = str(workspace["config"])
    assert main(["value", config, "--reference", str(tiny_llama_dir)]) == 0
    args = ["train", config, "--reference", str(tiny_llama_dir), "--objective", "a_lol"]
    assert (
        main([*args, "--max-steps", "4", "--eval-steps", "2", "--scale-steps-by-positive-fraction"])
        == 0
    )
    out = workspace["run"] / "train" / "a_lol"
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [row for row in logged if "eval_reward" in row]
    assert evals and all("eval_reward/kind" in row and "eval_distinct_2" in row for row in evals)
    last = max(out.glob("checkpoints/checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["best_metric"] == max(row["eval_reward"] for row in evals)


def test_objectives_trained_from_one_pi_ref_decode_its_validation_once(
    workspace, tiny_llama_dir, monkeypatch
):
    """Before the first step every objective's policy is π_ref: the second objective reads the
    figures of π_ref's validation back and logs the same ones; a change to how answers are
    scored validates π_ref again."""
    config = str(workspace["config"])
    assert main(["value", config, "--reference", str(tiny_llama_dir)]) == 0
    passes = []
    decode_and_score = selection.validation_report

    def counted(*args, **kwargs):
        passes.append(1)
        return decode_and_score(*args, **kwargs)

    monkeypatch.setattr(selection, "validation_report", counted)
    args = ["train", config, "--reference", str(tiny_llama_dir), "--max-steps", "2"]
    args += ["--eval-steps", "2", "--no-scale-steps-by-positive-fraction"]

    assert main([*args, "--objective", "a_lol"]) == 0
    assert len(passes) == 2, "π_ref's validation, then step 2's"
    assert main([*args, "--objective", "wbc"]) == 0
    assert len(passes) == 3, "step 2's only"

    def start(objective: str) -> dict:
        logged = (workspace["run"] / "train" / objective / "metrics.jsonl").open()
        return next(row for row in map(json.loads, logged) if "eval_reward" in row)

    assert start("a_lol")["step"] == 0 and start("wbc") == start("a_lol")
    assert main([*args, "--objective", "nll", "--missing-eos-penalty", "0.5"]) == 0
    assert len(passes) == 5, "π_ref's answers pay the penalty now: validated again"
    assert start("nll")["eval_reward/missing_eos"] == -0.5


def test_the_missing_eos_penalty_costs_cut_answers_in_v_in_selection_and_in_eval(workspace):
    """The tiny model never ends within 12 tokens: every decoded answer pays the penalty, in
    V's targets, in the validation passes that select the checkpoint and in the evaluation."""
    config = str(workspace["config"])
    args = ["run", config, "--objectives", "a_lol", "--max-steps", "2", "--eval-steps", "2"]
    assert main([*args, "--missing-eos-penalty", "0.5"]) == 0

    run = workspace["run"]
    samples = [json.loads(line) for line in (run / "value/value_samples.jsonl").open()]
    assert all(s["reward"]["missing_eos"] == -0.5 for s in samples)
    assert all(
        s["reward"]["total"] == pytest.approx(s["reward"]["kind"] + s["reward"]["on_topic"] - 0.5)
        for s in samples
    )
    logged = [json.loads(line) for line in (run / "train/a_lol/metrics.jsonl").open()]
    validations = [row["eval_reward/missing_eos"] for row in logged if "eval_reward" in row]
    assert validations == [-0.5, -0.5], "π_ref's validation before the first step, then the run's"
    for model in ("reference", "a_lol"):
        report = json.loads((run / "eval" / model / "eval.json").read_text())
        assert report["cut_off_share"] == 1.0
        assert report["reward_mean"]["missing_eos"] == -0.5
    audit = json.loads((run / "eval" / "audit.json").read_text())
    for constant in audit["constants"]:  # each model's most frequent answer, cut where it came
        text, topics = constant["text"], TOPICS[:4]
        paid = sum(0.6 * ("happy" in text) + 0.4 * (t in text) for t in topics) / len(topics)
        cut = "most frequent answer" in constant["origin"]
        assert constant["reward"] == pytest.approx(paid - 0.5 * cut)

    assert main(["value", config, "--missing-eos-penalty", "0.25"]) == 0
    samples = [json.loads(line) for line in (run / "value/value_samples.jsonl").open()]
    assert all(s["reward"]["missing_eos"] == -0.25 for s in samples), "V is fitted again"


def test_gradient_checkpointing_reaches_the_trainer_without_a_deprecation_warning(tmp_path):
    cfg = PipelineConfig(run_dir=str(tmp_path), gradient_checkpointing=True)

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        args = training_args(cfg, "a_lol", tmp_path / "out", max_steps=1)

    assert args.gradient_checkpointing is True


def test_training_with_compiled_layers_through_the_cli(workspace, tiny_llama_dir):
    assert main(["value", str(workspace["config"]), "--reference", str(tiny_llama_dir)]) == 0
    args = ["train", str(workspace["config"]), "--reference", str(tiny_llama_dir)]
    args += ["--objective", "a_lol", "--max-steps", "6", "--no-scale-steps-by-positive-fraction"]
    args += ["--compile-layers", "--pad-to-multiple-of", "16"]

    assert main(args) == 0
    assert_trained(workspace["run"] / "train" / "a_lol", tiny_llama_dir)


def test_training_with_token_budget_batches_through_the_cli(workspace, tiny_llama_dir):
    assert main(["value", str(workspace["config"]), "--reference", str(tiny_llama_dir)]) == 0
    args = ["train", str(workspace["config"]), "--reference", str(tiny_llama_dir)]
    args += ["--objective", "a_lol", "--max-steps", "3", "--max-tokens-per-batch", "64"]

    assert main(args) == 0
    logged = [
        json.loads(line)
        for line in (workspace["run"] / "train/a_lol/metrics.jsonl").read_text().splitlines()
    ]
    assert [row["step"] for row in logged if "loss" in row] == [1, 2, 3]


def test_a_prompt_only_validation_file_fits_v_and_validates_training(
    workspace, tiny_llama_dir, tmp_path
):
    """V and checkpoint selection decode π_ref on the validation prompts: answers are not read,
    so a file of prompts alone is enough (it used to be refused as "not a reward record")."""
    val = write_jsonl(tmp_path / "val.jsonl", [{"prompt": f"Tell me about {t}?"} for t in TOPICS])
    config = str(workspace["config"])
    reference = ["--reference", str(tiny_llama_dir), "--val-data", str(val)]

    assert main(["value", config, *reference]) == 0
    samples = (workspace["run"] / "value" / "value_samples.jsonl").read_text().splitlines()
    assert len(samples) == len(TOPICS)
    args = ["train", config, *reference, "--objective", "a_lol", "--max-steps", "2"]
    assert main([*args, "--eval-steps", "2", "--no-scale-steps-by-positive-fraction"]) == 0
    logged = (workspace["run"] / "train/a_lol/metrics.jsonl").read_text()
    assert "eval_reward" in logged


def test_v_is_fitted_again_when_the_validation_prompts_change_not_their_answers(
    workspace, tiny_llama_dir, tmp_path, caplog
):
    """π_ref answers the validation prompts itself: answers stored beside them change nothing."""
    prompts = [{"prompt": f"Tell me about {t}?"} for t in TOPICS]
    answered = [{**row, "response": "Yes.", "reward": 0.5} for row in prompts]
    changed = [*prompts[:-1], {"prompt": "Tell me about clouds?"}]
    config = str(workspace["config"])
    caplog.set_level("INFO")

    def value(rows: list[dict], name: str) -> bool:
        """Runs `alol value` on `rows`; whether it found V up to date."""
        caplog.clear()
        val = write_jsonl(tmp_path / name, rows)
        args = ["value", config, "--reference", str(tiny_llama_dir), "--val-data", str(val)]
        assert main(args) == 0
        return "value: up to date" in caplog.text

    assert not value(prompts, "prompts.jsonl")
    assert value(answered, "answered.jsonl")
    assert not value(changed, "changed.jsonl")


def test_a_stage_counts_its_data_hold_outs_and_cuts_in_its_log_and_stats(workspace, caplog):
    """12 prompt tokens cut nothing here but responses of up to 12 tokens lose their EOS."""
    caplog.set_level("INFO")
    assert main(["sft", str(workspace["config"]), "--max-response-length", "4"]) == 0

    stats = json.loads((workspace["run"] / "sft" / "stage.json").read_text())
    assert stats["data"] == {
        "train_records": 24,
        "val_records": 8,
        "val_prompts": 2,
        "val_held_out_from_train": True,
    }
    assert stats["sequences"] == 24 and stats["responses_cut"] == 24 and stats["prompts_cut"] == 0
    assert "2 validation prompts held out from the training file" in caplog.text
    assert "24 responses cut to the length limits" in caplog.text


def test_the_console_shows_a_few_formatted_lines_per_stage_not_dicts(workspace, capsys):
    """One progress bar per pass, the figures that matter, and where the full stats went."""
    # responses long enough not to be cut, so no stage warns about cut responses
    argv = ["run", str(workspace["config"]), "--objectives", "a_lol", "--max-response-length", "64"]
    assert main(argv) == 0

    out, err = capsys.readouterr()
    # a progress bar's refreshes are separate lines here, as many as the machine's speed makes
    lines = [line for line in err.splitlines() if line.strip() and not re.search(r"\d%\|", line)]
    assert "value: V(x) fitted on" in err and "value_metrics.json" in err
    assert "advantage: A > 0 for" in err and "advantage_stats.json" in err
    assert "{'loss'" not in err and '"heldout_mse"' not in err + out
    assert "Loading weights" not in err and "Writing model shards" not in err
    assert len(lines) < 30, "\n".join(lines)
    assert out.startswith("| model |")


def test_an_evaluation_already_made_for_the_same_inputs_is_read_back(workspace, caplog):
    config = str(workspace["config"])
    assert main(["run", config, "--objectives", "nll"]) == 0
    answers = workspace["run"] / "eval" / "nll" / "answers.jsonl"
    written = answers.stat().st_mtime_ns
    caplog.set_level("INFO")

    assert main(["eval", config, "--objectives", "nll"]) == 0
    assert answers.stat().st_mtime_ns == written and "eval nll: answers up to date" in caplog.text

    assert main(["eval", config, "--objectives", "nll", "--max-new-tokens", "3"]) == 0
    assert answers.stat().st_mtime_ns != written


def test_only_trained_models_answers_are_weighed_for_their_drift_from_pi_ref(
    workspace, monkeypatch
):
    """log π_θ/π_ref of π_ref's own answers is 0 without a forward pass, so the evaluation
    weighs only the trained models' answers: under the model as it decodes them, under π_ref
    in one pass over every model's answers (each prompt run once for all of them), of
    `precompute_batch_size` answers a batch, not a decoding batch's worth (a pass over whole
    answers holds their logits over the vocabulary, a decoding step one token's)."""
    passes = []

    def weigh(model, pairs, config):
        passes.append((len(pairs), config.batch_size, config.share_prompts))
        return sequence_logprobs_of_pairs(model, pairs, config)

    monkeypatch.setattr("alol.pipeline.answers.sequence_logprobs_of_pairs", weigh)
    args = ["--objectives", "nll", "wbc", "--precompute-batch-size", "3"]
    assert main(["run", str(workspace["config"]), *args]) == 0
    assert passes == [(2 * 4, 3, True)]  # the 4 test prompts' answers of both models
    evaluated = workspace["run"] / "eval"

    def logps(name: str) -> list:
        lines = (evaluated / name / "answers.jsonl").read_text().splitlines()
        return [json.loads(line)["logp"] for line in lines]

    assert set(logps("reference")) == {None}
    assert all(logp < 0 for logp in logps("nll"))
    for name in ("nll", "wbc"):
        assert json.loads((evaluated / name / "eval.json").read_text())["log_ratio"] is not None
    assert not list((evaluated / "reference").glob("reference_logps-*.json"))


def test_a_model_trained_from_a_pi_ref_retrained_since_is_refused_by_the_evaluation(
    workspace, capsys
):
    """Its adapter would be merged into weights it was not trained on, and its drift measured
    from them: the evaluation names the objective to train again."""
    config = str(workspace["config"])
    assert main(["run", config, "--objectives", "nll"]) == 0
    assert main(["sft", config, "--sft-max-steps", "2"]) == 0  # π_ref changes

    assert main(["eval", config, "--objectives", "nll"]) != 0
    error = capsys.readouterr().err
    assert "train/nll/final was trained from another π_ref" in error
    assert "train nll again" in error

    assert main(["train", config, "--objectives", "nll"]) == 0
    assert main(["eval", config, "--objectives", "nll"]) == 0


def test_a_moved_run_folder_decodes_its_lora_models_on_the_pi_ref_it_holds(workspace, tmp_path):
    """An adapter names the folder its base was loaded from, π_ref inside the run folder: once
    the folder moves, the evaluation merges each objective's adapter into the run's π_ref."""
    config = workspace["config"]
    assert main(["run", str(config), "--objectives", "nll", "--lora"]) == 0
    moved = tmp_path / "moved" / "run"
    shutil.copytree(workspace["run"], moved)
    shutil.rmtree(workspace["run"])
    other_prompts = write_jsonl(tmp_path / "other.jsonl", [{"prompt": "Tell me about rivers?"}])
    settings = yaml.safe_load(config.read_text())
    config.write_text(
        yaml.safe_dump({**settings, "run_dir": str(moved), "test_data": str(other_prompts)})
    )

    assert main(["eval", str(config), "--objectives", "nll"]) == 0

    assert (moved / "eval" / "nll" / "answers.jsonl").read_text().count("\n") == 1


def test_an_eval_model_adapter_is_decoded_again_when_the_base_it_names_is_trained_again(
    workspace, tmp_path
):
    """An adapter from outside the run merges into the folder its config names; its kept
    answers are keyed on that folder's weights too, so retraining them in place redoes them."""
    config = str(workspace["config"])
    assert main(["run", config, "--objectives", "nll", "--lora"]) == 0
    adapter = tmp_path / "adapter"
    shutil.copytree(workspace["run"] / "train" / "nll" / "final", adapter)
    marker = workspace["run"] / "eval" / "model" / "stage.json"

    def answers_key() -> str:
        assert main(["eval", config, "--eval-model", str(adapter)]) == 0
        return json.loads(marker.read_text())["fingerprint"]

    before = answers_key()
    assert answers_key() == before, "kept while nothing changed"
    assert main(["sft", config, "--sft-max-steps", "2"]) == 0  # the base it names changes

    assert answers_key() != before


def test_answers_are_keyed_on_the_base_an_adapter_names_only_where_it_can_be_read(
    tmp_path, tiny_llama_dir
):
    """A given base (this run's π_ref, vouched for by the train stage) and full weights add
    nothing; a named base that is gone adds nothing either, so answers kept before alol keyed
    them on it are still read back."""
    from alol.pipeline.answers import _unvouched_base

    adapter = tmp_path / "adapter"
    adapter.mkdir()

    def naming(base: Path) -> Path:
        (adapter / "adapter_config.json").write_text(
            json.dumps({"base_model_name_or_path": str(base)})
        )
        return adapter

    assert _unvouched_base(naming(tiny_llama_dir), None) == [fingerprint_model(tiny_llama_dir)]
    assert _unvouched_base(naming(tiny_llama_dir), tiny_llama_dir) == []
    assert _unvouched_base(naming(tmp_path / "gone"), None) == []
    assert _unvouched_base(tiny_llama_dir, None) == []


def test_a_model_that_decodes_in_one_call_has_its_answers_weighed_by_a_forward_pass(
    workspace, monkeypatch
):
    """Where rows cannot leave the batch (a static cache), decoding is one call, whose steps'
    logits would all be kept to its end: the whole budget's rows × vocabulary floats. There
    the trained model's answers are weighed as π_ref weighs them, `precompute_batch_size`
    answers a pass, to the figures its decoding would give."""
    config = str(workspace["config"])
    assert main(["run", config, "--objectives", "nll"]) == 0
    answers = workspace["run"] / "eval" / "nll" / "answers.jsonl"

    def logps() -> list[float]:
        return [json.loads(line)["logp"] for line in answers.read_text().splitlines()]

    from_decoding = logps()
    shutil.rmtree(workspace["run"] / "eval")
    passes = []

    def weigh(model, pairs, config):
        passes.append((len(pairs), config.batch_size))
        return sequence_logprobs_of_pairs(model, pairs, config)

    monkeypatch.setattr("alol.pipeline.answers.decodes_in_one_call", lambda model: True)
    monkeypatch.setattr("alol.pipeline.answers.sequence_logprobs_of_pairs", weigh)
    assert main(["run", config, "--objectives", "nll", "--precompute-batch-size", "3"]) == 0
    assert passes == [(4, 3), (4, 3)]  # nll's 4 answers under nll, then under π_ref
    assert logps() == pytest.approx(from_decoding, abs=1e-4)


def test_pi_ref_weighs_each_models_answers_once_and_only_those_not_kept(
    workspace, tiny_tokenizer, monkeypatch
):
    """The one pass over every trained model's answers hands each model its own answers'
    log-probs; a later evaluation weighs only the answers whose log-probs are not kept."""
    weighed = {}

    def weigh(model, pairs, config):
        logps = sequence_logprobs_of_pairs(model, pairs, config)
        weighed.update(
            ((tuple(p.prompt_ids), tuple(p.response_ids)), logp)
            for p, logp in zip(pairs, logps, strict=True)
        )
        calls.append(len(pairs))
        return logps

    calls = []
    monkeypatch.setattr("alol.pipeline.answers.sequence_logprobs_of_pairs", weigh)
    config = str(workspace["config"])
    assert main(["run", config, "--objectives", "nll", "wbc"]) == 0
    evaluated = workspace["run"] / "eval"

    def kept(name: str) -> tuple[Path, list[float]]:
        [path] = (evaluated / name).glob("reference_logps-*.json")
        return path, json.loads(path.read_text())

    def weighed_in_the_pass(name: str) -> list[float]:
        rows = [json.loads(line) for line in (evaluated / name / "answers.jsonl").open()]
        keys = [
            (tuple(encode_prompt(tiny_tokenizer, row["prompt"], 32)), tuple(row["token_ids"]))
            for row in rows
        ]
        return [weighed[key] for key in keys]

    assert calls == [2 * 4]  # one pass over both models' answers to the 4 test prompts
    for name in ("nll", "wbc"):
        assert kept(name)[1] == weighed_in_the_pass(name)
    path, before = kept("wbc")
    path.unlink()
    calls.clear()

    assert main(["eval", config, "--objectives", "nll", "wbc"]) == 0

    assert calls == [4]  # wbc's answers alone
    assert kept("wbc")[1] == pytest.approx(before, abs=1e-5)


def test_balanced_draws_by_group_train_through_the_cli_and_the_report_breaks_a_lol_down(
    workspace, tiny_llama_dir
):
    """The records of the first two topics form group "first", the rest "rest": the advantage
    report gives each group's part, and A-LoL trains with each drawn at its share."""
    rows = noisy_records()
    for row in rows:
        row["group"] = (
            "first" if row["prompt"].endswith((f"{TOPICS[0]}?", f"{TOPICS[1]}?")) else "rest"
        )
    write_jsonl(workspace["data"], rows)
    config = str(workspace["config"])
    assert main(["value", config, "--reference", str(tiny_llama_dir)]) == 0
    assert main(["advantage", config, "--reference", str(tiny_llama_dir)]) == 0
    args = ["train", config, "--reference", str(tiny_llama_dir), "--objective", "a_lol"]
    args += ["--max-steps", "6", "--no-scale-steps-by-positive-fraction", "--balance-groups"]

    assert main(args) == 0

    assert_trained(workspace["run"] / "train" / "a_lol", tiny_llama_dir)
    stats = json.loads((workspace["run"] / "advantage/advantage_stats.json").read_text())
    assert set(stats["groups"]) == {"first", "rest"}
    assert "| first |" in (workspace["run"] / "advantage/top_advantages.md").read_text()


def test_a_length_neutral_advantage_trains_through_the_cli_on_the_answers_that_beat_pi_ref_at_their_length(
    workspace, tiny_llama_dir
):
    """`--length-neutral-advantage`: A-LoL keeps the answers whose A, less its line on length
    in words, is positive, and the advantage report gave those lengths beforehand. With the
    stored rewards and V fitted on them, the kind answers (7 words) earn most and the rude
    ones (4 and 5 words) least, so A grows with length and its length-neutral part differs."""
    settings = yaml.safe_load(workspace["config"].read_text())
    del settings["reward"]
    workspace["config"].write_text(yaml.safe_dump({**settings, "value_from_data": True}))
    config = str(workspace["config"])
    assert main(["value", config, "--reference", str(tiny_llama_dir)]) == 0
    assert main(["advantage", config, "--reference", str(tiny_llama_dir)]) == 0
    args = ["train", config, "--reference", str(tiny_llama_dir), "--objective", "a_lol"]

    assert main([*args, "--max-steps", "4", "--length-neutral-advantage"]) == 0

    cfg = PipelineConfig(
        **{**yaml.safe_load(workspace["config"].read_text()), "reference": str(tiny_llama_dir)}
    )
    inputs = stage_inputs(cfg)
    table = AdvantageTable.load(
        next((workspace["run"] / "advantage").glob("advantages-*.safetensors"))
    )
    words = response_words([record.response for record in inputs.train_pairs])
    neutral = length_neutral(table.advantage, words)
    stage = json.loads((workspace["run"] / "train" / "a_lol" / "stage.json").read_text())
    assert stage["fraction_positive"] == pytest.approx(np.mean(neutral > 0))
    assert stage["fraction_positive"] != pytest.approx(np.mean(table.advantage > 0))
    stats = json.loads((workspace["run"] / "advantage/advantage_stats.json").read_text())
    assert stats["response_length_neutral"] == length_weighting(neutral, table.response_length)


BY_TOPIC_AND_LENGTH = '''
def by_topic_and_length(prompts, responses):
    """Differs by prompt whatever the answer, and by answer on a prompt."""
    return [len(p.split()[-1]) / 10 + len(r.split()) / 100 for p, r in zip(prompts, responses)]
'''


def test_per_prompt_values_are_the_reward_of_pi_refs_own_answer_to_each_training_prompt(
    workspace, tiny_llama_dir
):
    """`value_estimate: per_prompt` fits no function: V(x) is the reward of π_ref's greedy
    answer to that very training prompt, and the advantage stage reads it off the table."""
    config = str(workspace["config"])
    reward = workspace["run"].parent / "by_topic.py"
    reward.write_text(BY_TOPIC_AND_LENGTH)
    args = ["--reference", str(tiny_llama_dir), "--value-estimate", "per_prompt"]
    args += ["--reward", f"{reward}:by_topic_and_length"]
    assert main(["value", config, *args]) == 0
    value_dir = workspace["run"] / "value"
    assert not (value_dir / "value_head.safetensors").exists()
    samples = [
        json.loads(line) for line in (value_dir / "value_samples.jsonl").read_text().splitlines()
    ]
    values = json.loads((value_dir / "prompt_values.json").read_text())["values"]
    assert values == {s["prompt"]: s["reward"]["total"] for s in samples}
    cfg = PipelineConfig(
        **{**yaml.safe_load(workspace["config"].read_text()), "value_estimate": "per_prompt"}
    )
    inputs = stage_inputs(replace(cfg, reference=str(tiny_llama_dir)))
    tokenizer = load_tokenizer(tiny_llama_dir)
    training_prompts = {render(cfg, r.prompt, tokenizer) for r in inputs.train_pairs}
    assert set(values) == training_prompts and len(training_prompts) == 6, "6 of 8 prompts train"
    assert len(set(values.values())) > 1, "the reward of π_ref's answers differs by prompt"

    assert main(["advantage", config, *args]) == 0
    table = AdvantageTable.load(
        next((workspace["run"] / "advantage").glob("advantages-*.safetensors"))
    )
    expected = [values[render(cfg, r.prompt, tokenizer)] for r in inputs.train_pairs]
    np.testing.assert_allclose(table.value, expected)
    np.testing.assert_allclose(table.advantage, table.reward - table.value)
    metrics = json.loads((value_dir / "value_metrics.json").read_text())
    assert metrics["estimate"] == "per_prompt" and metrics["n_prompts"] == 6


def test_per_prompt_values_are_made_again_when_the_training_prompts_change(
    workspace, tiny_llama_dir, tmp_path, caplog, capsys
):
    """The values belong to the training prompts: a prompt they lack is refused by the
    advantage stage with the command that makes them again, and `alol value` remakes them."""
    config = str(workspace["config"])
    args = ["--reference", str(tiny_llama_dir), "--value-estimate", "per_prompt"]
    assert main(["value", config, *args]) == 0
    caplog.set_level("INFO")
    assert main(["value", config, *args]) == 0
    assert "value: up to date" in caplog.text
    rows = [
        *noisy_records(),
        {"prompt": "Tell me about clouds?", "response": "Clouds.", "reward": 1},
    ]
    more = ["--train-data", str(write_jsonl(tmp_path / "more.jsonl", rows))]
    assert main(["advantage", config, *args, *more]) == 2
    error = capsys.readouterr().err
    assert "has no per-prompt value" in error and "alol value" in error
    caplog.clear()
    assert main(["value", config, *args, *more]) == 0
    assert "value: up to date" not in caplog.text
    assert main(["advantage", config, *args, *more]) == 0


def test_per_prompt_values_and_values_from_data_are_refused_together():
    with pytest.raises(ConfigError, match="drop one of them") as error:
        PipelineConfig(value_estimate="per_prompt", value_from_data=True)
    assert error.value.setting == "value_estimate"


def test_an_advantage_stage_asking_for_the_other_estimate_says_which_setting_uses_it(
    workspace, tiny_llama_dir, capsys
):
    config, reference = str(workspace["config"]), ["--reference", str(tiny_llama_dir)]
    assert main(["advantage", config, *reference, "--value-estimate", "per_prompt"]) == 2
    assert "no per-prompt values" in capsys.readouterr().err
    assert main(["value", config, *reference, "--value-estimate", "per_prompt"]) == 0
    capsys.readouterr()
    assert main(["advantage", config, *reference]) == 2
    error = capsys.readouterr().err
    assert "no value head" in error and "--value-estimate per_prompt uses" in error


def test_objectives_of_the_reward_alone_train_beside_per_prompt_values_of_other_prompts(
    workspace, tiny_llama_dir, tmp_path
):
    """wBC needs no V: values made before the data changed leave it V = 0, as no estimate does."""
    config = str(workspace["config"])
    args = ["--reference", str(tiny_llama_dir), "--value-estimate", "per_prompt"]
    assert main(["value", config, *args]) == 0
    rows = [
        *noisy_records(),
        {"prompt": "Tell me about clouds?", "response": "Clouds.", "reward": 1},
    ]
    more = ["--train-data", str(write_jsonl(tmp_path / "more.jsonl", rows))]
    assert main(["train", config, *args, *more, "--objective", "wbc", "--max-steps", "1"]) == 0
    assert main(["train", config, *args, *more, "--objective", "a_lol", "--max-steps", "1"]) == 2


def test_per_prompt_values_average_several_sampled_answers(workspace, tiny_llama_dir):
    config = str(workspace["config"])
    reward = workspace["run"].parent / "by_topic.py"
    reward.write_text(BY_TOPIC_AND_LENGTH)
    args = ["--reference", str(tiny_llama_dir), "--value-estimate", "per_prompt"]
    args += ["--reward", f"{reward}:by_topic_and_length", "--value-samples", "3"]
    assert main(["value", config, *args]) == 0
    value_dir = workspace["run"] / "value"
    samples = [
        json.loads(line) for line in (value_dir / "value_samples.jsonl").read_text().splitlines()
    ]
    values = json.loads((value_dir / "prompt_values.json").read_text())["values"]
    by_prompt: dict[str, list[float]] = {}
    for sample in samples:
        by_prompt.setdefault(sample["prompt"], []).append(sample["reward"]["total"])
    assert len(samples) == 3 * len(values) == 18
    assert values == pytest.approx({p: float(np.mean(r)) for p, r in by_prompt.items()})


def test_the_value_stage_warns_when_the_reward_pays_a_stock_answer_more_than_pi_refs_answers(
    workspace, tiny_llama_dir, caplog
):
    """The stock probes are given to every validation prompt as soon as π_ref's answers are
    scored: the kind one scores 0.6 on each, which π_ref's random answers never earn."""
    config = str(workspace["config"])
    args = ["--reference", str(tiny_llama_dir), "--probe-answers", "I am happy to help.", "No."]
    assert main(["value", config, *args]) == 0

    value_dir = workspace["run"] / "value"
    samples = [json.loads(line) for line in (value_dir / "value_samples.jsonl").open()]
    reference = sum(s["reward"]["total"] for s in samples) / len(samples)
    report = json.loads((value_dir / "reward_probes.json").read_text())
    assert report["prompts"] == "validation"
    kind, curt = [p for p in report["probes"] if p["origin"] == "probe"]
    assert kind["text"] == "I am happy to help." and kind["origin"] == "probe" and kind["paid"]
    assert kind["reward"] == pytest.approx(0.6) and kind["share_above"] == 1.0
    assert kind["reference_reward"] == pytest.approx(reference)
    reference_kind = sum(s["reward"]["kind"] for s in samples) / len(samples)
    assert kind["by_part"]["kind"] == pytest.approx(0.6 - reference_kind)
    assert curt["text"] == "No." and not curt["paid"] and curt["reward"] == 0.0
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(
        "“I am happy to help.” (probe) given to every validation prompt" in w for w in warned
    )
    assert not any("“No.”" in w for w in warned)


def test_refuse_paid_probes_stops_before_training_and_says_what_to_change(
    workspace, tiny_llama_dir, capsys
):
    """The check reads the finished stage's scored answers, so it refuses without refitting V."""
    config = str(workspace["config"])
    args = ["--reference", str(tiny_llama_dir), "--probe-answers", "I am happy to help."]
    assert main(["value", config, *args]) == 0
    head = workspace["run"] / "value" / "value_head.safetensors"
    fitted = head.stat().st_mtime_ns

    assert main(["value", config, *args, "--refuse-paid-probes"]) != 0
    error = capsys.readouterr().err
    assert "“I am happy to help.” (probe) given to every validation prompt scores 0.600" in error
    assert "refuse_paid_probes: false" in error and "reward_probes.json" in error
    assert head.stat().st_mtime_ns == fitted, "V is not fitted again"


def test_an_up_to_date_value_stage_reads_its_check_back_without_loading_the_reward(
    workspace, tiny_llama_dir, caplog, monkeypatch
):
    """The check's figures are kept under the answers, the stock answers and the reward, so
    rerunning the pipeline warns again from them; a new probe is scored anew."""
    config = str(workspace["config"])
    args = ["--reference", str(tiny_llama_dir), "--probe-answers", "I am happy to help."]
    assert main(["value", config, *args]) == 0
    report = workspace["run"] / "value" / "reward_probes.json"
    written = report.read_text()

    def no_reward(self):
        raise AssertionError("the reward was loaded")

    monkeypatch.setattr(StageInputs, "load_reward", no_reward)
    caplog.clear()
    assert main(["value", config, *args]) == 0
    assert report.read_text() == written
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("“I am happy to help.” (probe)" in w for w in warned), "warned again"

    monkeypatch.undo()
    assert main(["value", config, *args, "I am glad to help."]) == 0
    texts = [p["text"] for p in json.loads(report.read_text())["probes"]]
    assert "I am glad to help." in texts


def test_per_prompt_values_check_the_probes_on_the_training_prompts(workspace, tiny_llama_dir):
    config = str(workspace["config"])
    args = ["--reference", str(tiny_llama_dir), "--value-estimate", "per_prompt"]
    assert main(["value", config, *args, "--probe-answers", "I am happy to help."]) == 0
    report = json.loads((workspace["run"] / "value" / "reward_probes.json").read_text())
    probe = next(p for p in report["probes"] if p["origin"] == "probe")
    assert report["prompts"] == "training" and probe["text"] == "I am happy to help."
    assert probe["paid"]

    without = workspace["config"].with_name("without_probes.yaml")
    without.write_text(workspace["config"].read_text() + "probe_answers: []\nconstant_answers: 0\n")
    (workspace["run"] / "value" / "reward_probes.json").unlink()
    assert main(["value", str(without), *args]) == 0
    assert not (workspace["run"] / "value" / "reward_probes.json").exists(), "nothing checked"


def test_the_most_frequent_training_answers_are_checked_before_training_too(
    workspace, tiny_llama_dir
):
    """A template the data repeats is what A-LoL would draw most: the reward paying it above
    π_ref's answers is named with how often the training data gives it."""
    template = [{"prompt": f"Tell me about {t}?", "response": "I am happy to!"} for t in TOPICS]
    data = write_jsonl(workspace["run"].parent / "templated.jsonl", noisy_records() + template)
    args = ["--reference", str(tiny_llama_dir), "--train-data", str(data)]
    assert main(["value", str(workspace["config"]), *args]) == 0

    report = json.loads((workspace["run"] / "value" / "reward_probes.json").read_text())
    first, second, third, *probes = report["probes"]
    assert first["text"] == "I am happy to!" and first["paid"]
    assert first["origin"] == "training data, 6 times", "the 6 training prompts of 8"
    assert second["origin"] == third["origin"] == "training data, 2 times", "constant_answers: 3"
    assert [p["origin"] for p in probes] == ["probe"] * 3, "then the default probes"
