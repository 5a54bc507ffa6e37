"""Nothing silently wrong: an artifact is used only with the model it was made for, only causal
LMs are policies, every failure a user can fix is one line on stderr (`alol <command>: error:`,
exit 2) that says what to change, Ctrl-C says where a rerun resumes, and anything else is a bug
shown as one. Each test here failed before issue 25."""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from conftest import constant_value_head
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from alol.atomic import write_json
from alol.cli import main
from alol.console import configure_console
from alol.data.formats import load_records
from alol.demo.tiny_models import build_tiny_model, save_tiny
from alol.fingerprint import fingerprint_rendering
from alol.pipeline.inputs import Splits, log_data
from alol.rewards import CallableReward, score
from alol.rewards.classifier import SETTINGS_FILE
from alol.train.trainer import AlolTrainer

TOPICS = ["bread", "tea", "rain", "cats", "trees", "boats"]


def rows(n: int = 12) -> list[dict]:
    return [
        {
            "prompt": f"Tell me about {TOPICS[i % 6]}?",
            "response": f"I am happy {i}." if i % 2 else f"No {i}.",
            "reward": 0.1 * i,
        }
        for i in range(n)
    ]


def write_rows(path: Path, data: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in data))
    return path


@pytest.fixture
def config(tmp_path, tiny_llama_dir):
    """Write a config whose reference is the tiny Llama, with a value head fitted on it."""
    constant_value_head(tmp_path / "run", tiny_llama_dir)

    def make(data: list[dict] | None = None, **options) -> str:
        settings = {
            "reference": str(tiny_llama_dir),
            "train_data": str(write_rows(tmp_path / "train.jsonl", data or rows())),
            "val_fraction": 0.2,
            "run_dir": str(tmp_path / "run"),
            "max_steps": 2,
            "batch_size": 2,
            "max_prompt_length": 12,
            "max_response_length": 8,
            "precompute_batch_size": 4,
            **options,
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(settings))
        return str(path)

    return make


def refused(capsys, argv: list[str]) -> str:
    """The one error line `alol` ends with when it refuses `argv` (exit 2); no traceback."""
    capsys.readouterr()  # what the test printed itself (model saving bars)
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if f"alol {argv[0]}: error: " in line]
    assert "Traceback" not in err and len(errors) == 1, err
    assert err.rstrip().endswith(errors[0]), err
    return errors[0]


def tiny_llama(tokenizer_dir: Path, directory: Path, **options) -> Path:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return save_tiny(build_tiny_model(tokenizer, **options), tokenizer, directory)


# ---------------------------------------------------------------------------------------------
# Artifacts are used with the model they were made for


@pytest.mark.parametrize("other", [{"seed": 1}, {"hidden_size": 32}])
def test_a_value_head_fitted_on_another_model_is_refused_naming_both(
    tmp_path, tiny_llama_dir, tiny_tokenizer_dir, config, capsys, other
):
    """Before: the same hidden size gave "A > 0 for 90%" from the wrong V, exit 0; another one
    a RuntimeError from the LayerNorm."""
    reference = tiny_llama(tiny_tokenizer_dir, tmp_path / "other-reference", **other)

    error = refused(capsys, ["advantage", config(), "--reference", str(reference)])
    assert f"made for {tiny_llama_dir}" in error and f"not for {reference}" in error
    assert "`alol value`" in error


def test_a_value_head_that_records_no_model_is_refused_and_alol_value_fits_it_again(
    tmp_path, config, capsys
):
    path = config(value_from_data=True, value_epochs=1)
    assert main(["value", path]) == 0
    head_config = tmp_path / "run" / "value" / "value_head.json"
    head_config.write_text(json.dumps({**json.loads(head_config.read_text()), "model": None}))

    assert "does not record which model it was made for" in refused(capsys, ["advantage", path])

    assert main(["value", path]) == 0 and main(["advantage", path]) == 0


def test_a_reward_model_is_refused_with_a_policy_whose_template_renders_other_prompts(
    tmp_path, tiny_llama_dir, config, capsys
):
    """`alol reward-model` fitted it on prompts the tiny Llama renders (the plain template)."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    folder = save_tiny(build_tiny_model(tokenizer), tokenizer, tmp_path / "reward-model")
    plain = fingerprint_rendering(tokenizer, "chat")
    write_json(folder / SETTINGS_FILE, {"policy": {"path": "base", "fingerprint": plain}})
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}{% endfor %}"
    )
    chat = save_tiny(build_tiny_model(tokenizer), tokenizer, tmp_path / "chat-reference")
    reward = {"type": "classifier", "path": str(folder)}
    constant_value_head(tmp_path / "run", chat)

    error = refused(capsys, ["advantage", config(reward=reward), "--reference", str(chat)])
    assert f"the reward model {folder}" in error and f"not for {chat}" in error
    assert "`alol reward-model`" in error


def test_another_reference_gets_its_own_advantage_table_never_the_cached_one(
    tmp_path, tiny_tokenizer_dir, config, caplog
):
    """The precompute's tables need no record: the reference is part of their cache key."""
    path = config(value_from_data=True, value_epochs=1)
    other = tiny_llama(tiny_tokenizer_dir, tmp_path / "other", seed=3)
    caplog.set_level(logging.INFO)
    assert main(["advantage", path]) == 0
    assert main(["value", path, "--reference", str(other)]) == 0

    assert main(["advantage", path, "--reference", str(other)]) == 0
    assert caplog.text.count("computed advantages for 10 examples") == 2
    assert len(list((tmp_path / "run" / "advantage").glob("advantages-*.safetensors"))) == 2


# ---------------------------------------------------------------------------------------------
# Models: folders that exist, causal LMs, weights that fit


def test_an_encoder_classifier_is_refused_as_the_policy_before_its_weights_load(
    tmp_path, tiny_tokenizer_dir, config, capsys
):
    """Before: it loaded as BertLMHeadModel with is_decoder=False and trained, exit 0."""
    bert = tmp_path / "bert-classifier"
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    settings = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                          num_attention_heads=2, intermediate_size=64)  # fmt: skip
    save_tiny(BertForSequenceClassification(settings), tokenizer, bert)

    error = refused(capsys, ["sft", config(), "--model", str(bert)])
    assert f"{bert} is not a causal language model" in error and "encoder" in error


@pytest.mark.parametrize("name", ["runs/sft/modle", "/no/such/model", "./model"])
def test_a_model_folder_that_does_not_exist_is_no_such_folder_without_the_network(
    config, capsys, name
):
    """Before: a hub request (23 s of retries), or "Repo id must be in the form …"."""
    started = time.perf_counter()

    error = refused(capsys, ["sft", config(), "--model", name])

    assert f"no such model folder: {name}" in error
    assert time.perf_counter() - started < 20


def test_a_hub_id_that_cannot_be_fetched_is_said_once_and_quickly(config, capsys, monkeypatch):
    """No network here (a proxy that refuses), nor a cached copy: one line, no retries."""
    for variable in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    started = time.perf_counter()

    error = refused(capsys, ["sft", config(), "--model", "no-such-org/no-such-model"])

    assert "no folder no-such-org/no-such-model here, and the model hub" in error
    assert time.perf_counter() - started < 20


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path, tiny_llama_dir, config, capsys):
    """Before: a RuntimeError pointing to a report alol's console hides."""
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for file in tiny_llama_dir.iterdir():
        (mixed / file.name).write_bytes(file.read_bytes())
    settings = json.loads((mixed / "config.json").read_text())
    (mixed / "config.json").write_text(json.dumps({**settings, "intermediate_size": 96}))

    error = refused(capsys, ["sft", config(), "--model", str(mixed)])

    assert f"{mixed}: the weights do not fit config.json (6 tensors, e.g." in error
    assert re.search(r"is \[(128, 64|64, 128)\] in the weights but \[(96, 64|64, 96)\] by", error)


# ---------------------------------------------------------------------------------------------
# Rewards, templates and data: the fix the message names is one the CLI accepts


def test_a_classifier_reward_without_a_path_says_what_it_needs(config, capsys):
    """Before: KeyError: 'path'."""
    error = refused(capsys, ["advantage", config(reward={"type": "classifier"})])

    assert "needs a 'path': the folder of a sequence classifier" in error


def test_a_chat_template_that_refuses_a_role_names_the_model_and_the_roles(
    tmp_path, tiny_llama_dir, config, capsys
):
    """Before: jinja2's TemplateError, with neither file nor model."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "<{{ m['role'] }}> {{ m['content'] }}{% endfor %}"
    )
    strict = save_tiny(build_tiny_model(tokenizer), tokenizer, tmp_path / "no-system-role")
    system = [
        {**row, "prompt": [{"role": "system", "content": "Be brief."},
                           {"role": "user", "content": row["prompt"]}]}
        for row in rows()
    ]  # fmt: skip
    constant_value_head(tmp_path / "run", strict)

    error = refused(capsys, ["advantage", config(system), "--reference", str(strict)])
    assert f"the chat template of {strict} refused a prompt with the roles" in error
    assert "['system', 'user'] (System role not supported)" in error


def test_a_record_without_a_reward_is_named_by_its_line(tmp_path, config, capsys):
    """Before: a null reward on line 2 was "record 1"."""
    data = rows()
    data[1]["reward"] = None
    val = write_rows(tmp_path / "val.jsonl", rows()[:2])

    error = refused(capsys, ["advantage", config(data, val_data=str(val))])
    assert "train.jsonl:2: field 'reward': no reward;" in error and "(--reward)" in error


def test_stored_rewards_cannot_fit_v_on_a_prompt_only_validation_file(tmp_path, config, capsys):
    """Before: TypeError: expected RewardRecord, PreferenceRecord or RankedRecord."""
    val = write_rows(tmp_path / "val.jsonl", [{"prompt": "Tell me about tea?"}])
    path = config(val_data=str(val), value_from_data=True, value_epochs=1)

    error = refused(capsys, ["value", path])
    assert f"{val}:1: field 'response': a prompt without an answer" in error
    assert "drop value_from_data" in error


def test_stored_rewards_cannot_fit_v_on_a_validation_answer_without_one(tmp_path, config, capsys):
    """Before: the answer was left out of V's targets without a word."""
    val_rows = rows()[:3]
    val_rows[2]["reward"] = None
    val = write_rows(tmp_path / "val.jsonl", val_rows)
    path = config(val_data=str(val), value_from_data=True, value_epochs=1)

    error = refused(capsys, ["value", path])
    assert f"{val}:3: field 'reward': an answer without a stored reward" in error
    assert "drop value_from_data" in error


def test_the_empty_response_error_suggests_a_flag_that_exists(tmp_path, config, capsys):
    """Before: "pass allow_empty_responses=True", which the CLI has no flag for."""
    data = rows()
    data[3]["response"] = ""
    path = config(data)

    assert "--skip-invalid" in refused(capsys, ["advantage", path])
    assert main(["advantage", path, "--skip-invalid"]) == 0


def test_counts_have_their_plurals_and_a_repeat_does_not_weigh_double(config, caplog):
    """Before: "1 records repeat an earlier one exactly; they are kept and weigh double"."""
    data = rows()
    data.append(dict(data[0]))
    caplog.set_level(logging.INFO)

    assert main(["advantage", config(data)]) == 0

    assert "1 record repeats an earlier record exactly" in caplog.text
    assert "weigh double" not in caplog.text and "1 records" not in caplog.text


def test_an_implausibly_large_reward_is_warned_about_with_its_file_and_line(tmp_path, caplog):
    """Before: a reward of 1e30 trained with a loss of 4e30 and no word."""
    data = rows(3)
    data[1]["reward"] = 1e30
    path = write_rows(tmp_path / "train.jsonl", data)

    load_records(path)
    assert f"{path}: 1 reward of magnitude 1e+06 or more (first: {path}:2, 1e+30)" in caplog.text

    caplog.clear()
    huge = CallableReward(lambda prompts, responses: [-1e9] * len(responses), "huge")
    score(huge, ["p"] * 2, ["r"] * 2, show_progress=False)
    assert "2 rewards of magnitude 1e+06 or more (first: 0, -1e+09)" in caplog.text


# ---------------------------------------------------------------------------------------------
# Stages: failures marked, interrupts resumable, outputs readable by others


def test_a_failed_stage_is_marked_failed_and_retries_pile_up_no_stale_folders(
    tmp_path, tiny_llama_dir, config, capsys, monkeypatch
):
    """Before: stage.json stayed "running", and each retry with other inputs left a
    `.stale-*` folder holding only it."""
    monkeypatch.setattr(AlolTrainer, "train", lambda *a, **k: 1 / 0)
    path = config(model=str(tiny_llama_dir))

    for steps in ("2", "3"):
        assert main(["sft", path, "--max-steps", steps]) == 1
        assert "this is a bug in alol" in capsys.readouterr().err
        state = json.loads((tmp_path / "run" / "sft" / "stage.json").read_text())
        assert state["status"] == "failed" and "ZeroDivisionError" in state["error"]

    assert not list((tmp_path / "run").glob("sft.stale-*"))


def test_ctrl_c_says_where_the_run_resumes_and_rerunning_resumes_there(
    tmp_path, tiny_llama_dir, config, capsys, caplog, monkeypatch
):
    """Before: a 40-line KeyboardInterrupt, no hint that rerunning resumes."""
    path = config(model=str(tiny_llama_dir), max_steps=4, save_steps=1)
    step = AlolTrainer.training_step

    def interrupted_at_step_3(self, *args, **kwargs):
        if self.state.global_step == 2:
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(AlolTrainer, "training_step", interrupted_at_step_3)
        assert main(["sft", path]) == 130

    err = capsys.readouterr().err
    checkpoint = tmp_path / "run" / "sft" / "checkpoints" / "checkpoint-2"
    assert f"alol sft: interrupted; rerun the same command to resume sft from {checkpoint}" in err
    assert "Traceback" not in err
    state = json.loads((tmp_path / "run" / "sft" / "stage.json").read_text())
    assert state["status"] == "interrupted"

    caplog.set_level(logging.INFO)
    assert main(["sft", path]) == 0
    assert f"resuming from {checkpoint}" in caplog.text
    assert json.loads((tmp_path / "run" / "sft" / "stage.json").read_text())["status"] == "done"


class NotAWeight:
    """A class `torch.load(weights_only=True)` refuses to unpickle."""


def test_a_checkpoint_that_does_not_unpickle_safely_says_what_to_do(
    tmp_path, tiny_llama_dir, config, capsys
):
    """Before: a traceback that advised weights_only=False."""
    path = config(model=str(tiny_llama_dir), max_steps=2, save_steps=1)
    assert main(["sft", path]) == 0
    checkpoint = tmp_path / "run" / "sft" / "checkpoints" / "checkpoint-2"
    torch.save({"state": NotAWeight()}, checkpoint / "optimizer.pt")
    marker = tmp_path / "run" / "sft" / "stage.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "status": "interrupted"}))

    error = refused(capsys, ["sft", path])
    assert (
        f"cannot resume from checkpoint {checkpoint}: a file holds objects that torch.load" in error
    )
    assert "NotAWeight); it was not written by this alol's trainer" in error
    assert "--no-resume" in error


def test_outputs_honour_the_umask_like_the_files_transformers_writes(tmp_path, config):
    """Before: mkstemp made every atomically written file 0600."""
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "shared.json", {})
        assert main(["value", config(value_from_data=True, value_epochs=1)]) == 0
        os.umask(0o077)
        write_json(tmp_path / "private.json", {})
    finally:
        os.umask(old)

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(tmp_path / "shared.json") == 0o644 and mode(tmp_path / "private.json") == 0o600
    value = tmp_path / "run" / "value"
    assert {mode(value / name) for name in ("value_head.safetensors", "stage.json")} == {0o644}


# ---------------------------------------------------------------------------------------------
# The console: a library warning once per run, a bug shown as one


def test_a_library_warning_shows_once_per_run_though_trainer_resets_the_filters(capsys):
    """Before: transformers' is_gradient_checkpointing FutureWarning once per stage (--lora)."""
    configure_console()

    for _ in range(3):
        warnings.warn("`is_gradient_checkpointing` is deprecated", FutureWarning, stacklevel=1)
        with warnings.catch_warnings():  # what Trainer does several times a stage
            pass

    err = capsys.readouterr().err
    assert err.count("is_gradient_checkpointing") == 1
    assert "warning: FutureWarning (test_user_errors): `is_gradient_checkpointing` is" in err


def test_bitsandbytes_kernels_missing_from_the_hub_are_not_announced_on_every_command(capsys):
    """Before: every command began with bitsandbytes' CPU backend warning that it could not
    fetch its optional kernels from the hub (peft imports it), quantizing or not."""
    configure_console()

    logging.getLogger("bitsandbytes.backends.cpu.ops").warning(
        "Failed to load CPU gemm_4bit_forward from kernels-community"
    )
    logging.getLogger("bitsandbytes.nn.modules").warning("a 4-bit layer met a float16 input")

    err = capsys.readouterr().err
    assert "gemm_4bit_forward" not in err
    assert "warning (bitsandbytes.nn.modules): a 4-bit layer met a float16 input" in err


def test_an_error_that_is_no_users_to_fix_shows_its_traceback_as_a_bug(config, capsys, monkeypatch):
    def broken(cfg):
        return int("not a number")  # a ValueError, but raised outside alol's checks

    monkeypatch.setattr("alol.pipeline.run_advantage", broken)

    assert main(["advantage", config()]) == 1

    err = capsys.readouterr().err
    assert "Traceback" in err and "ValueError: invalid literal for int()" in err
    assert err.rstrip().endswith("please report it with the traceback above")


@pytest.mark.parametrize(("cut", "warned"), [(30, True), (10, False)])
def test_many_responses_cut_before_their_eos_are_warned_about(caplog, cut, warned):
    """A response cut at max_response_length loses its EOS: trained on many, a policy learns to
    run on to the token budget (the HH benchmark's rambling)."""
    cuts = {"sequences": 100, "prompts_cut": 0, "responses_cut": cut}
    log_data(logging.getLogger("alol.test"), "train a_lol", Splits([], []), cuts, 64)

    assert ("are longer than max_response_length (64 tokens)" in caplog.text) is warned
    assert (f"train a_lol: {cut}% of the responses it trains on" in caplog.text) is warned
