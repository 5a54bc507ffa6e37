"""Bad input never crashes alol and never disappears silently.

A bad record is a `DataError` naming file, line and field, or (with skip_invalid) a counted
skip; bad rewards and reward functions stop a stage with an error naming the batch and its
records; odd tokenizers (no pad token, a chat template, left padding) just work. The loaders'
example-based checks live in test_data.py; here the same promises are tested as properties.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import constant_value_head
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer

from alol.cli import main
from alol.config import PipelineConfig
from alol.data.formats import load_records
from alol.data.records import RewardRecord
from alol.data.tokenize import encode_prompt, tokenize_pair
from alol.errors import DataError
from alol.models.generate import GenerationConfig, generate_responses
from alol.models.precompute import AdvantageConfig, compute_advantages
from alol.pipeline.inputs import load_data

PROPERTY = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12).filter(
    str.strip
)
GOOD_ROWS = st.lists(
    st.fixed_dictionaries(
        {"prompt": TEXT, "response": TEXT, "reward": st.floats(-10, 10, allow_nan=False)}
    ),
    min_size=1,
    max_size=6,
)

# A bad JSON line and the field its error names (None: the line is not a record at all).
BAD_LINES = {
    "malformed JSON": (b'{"prompt": "p", "response": ', None),
    "not an object": (b'["p", "r"]', None),
    "invalid UTF-8": (b'{"prompt": "caf\xe9", "response": "r"}', None),
    "missing prompt": (b'{"response": "r", "reward": 1}', "prompt"),
    "missing response": (b'{"prompt": "p", "reward": 1}', "response"),
    "prompt of the wrong type": (b'{"prompt": 3, "response": "r"}', "prompt"),
    "response of the wrong type": (b'{"prompt": "p", "response": 5}', "response"),
    "reward of the wrong type": (b'{"prompt": "p", "response": "r", "reward": "high"}', "reward"),
    "boolean reward": (b'{"prompt": "p", "response": "r", "reward": true}', "reward"),
    "NaN reward": (b'{"prompt": "p", "response": "r", "reward": NaN}', "reward"),
    "infinite reward": (b'{"prompt": "p", "response": "r", "reward": Infinity}', "reward"),
    "overflowing reward": (b'{"prompt": "p", "response": "r", "reward": -1e999}', "reward"),
    "NaN reward component": (b'{"prompt": "p", "response": "r", "reward": {"a": NaN}}', "reward.a"),
    "empty response": (b'{"prompt": "p", "response": ""}', "response"),
    "whitespace response": (b'{"prompt": "p", "response": " \\n\\t "}', "response"),
}


def as_line(row: dict) -> bytes:
    return json.dumps(row).encode()


def expected_records(rows: list[dict]) -> list[tuple]:
    return [(r["prompt"], r["response"], r["reward"]) for r in rows]


def loaded_records(loaded) -> list[tuple]:
    return [(r.prompt, r.response, r.reward) for r in loaded.records]


@PROPERTY
@given(
    rows=GOOD_ROWS,
    position=st.integers(0, 6),
    bad=st.sampled_from(sorted(BAD_LINES)),
    skip=st.booleans(),
)
def test_one_bad_line_anywhere_is_named_by_file_line_and_field_or_skipped_and_counted(
    tmp_path, rows, position, bad, skip
):
    position = min(position, len(rows))
    line, field = BAD_LINES[bad]
    lines = [as_line(row) for row in rows]
    lines.insert(position, line)
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    if not skip:
        with pytest.raises(DataError) as raised:
            load_records(path, kind="reward")
        assert (raised.value.file, raised.value.line, raised.value.field) == (
            str(path),
            position + 1,
            field,
        )
        return
    loaded = load_records(path, kind="reward", skip_invalid=True)
    assert loaded_records(loaded) == expected_records(rows)
    assert [source for source, _ in loaded.skipped] == [f"{path}:{position + 1}"]


@PROPERTY
@given(rows=GOOD_ROWS, data=st.data())
def test_a_repeated_id_is_named_at_its_second_use(tmp_path, rows, data):
    assume(len(rows) >= 2)
    ids = [f"r{i}" for i in range(len(rows))]
    first, second = sorted(
        data.draw(st.lists(st.integers(0, len(rows) - 1), min_size=2, max_size=2, unique=True))
    )
    ids[second] = ids[first]
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join(as_line({**r, "id": i}) for r, i in zip(rows, ids, strict=True)))

    with pytest.raises(DataError) as raised:
        load_records(path)

    assert (raised.value.line, raised.value.field) == (second + 1, "id")
    assert f"first used at {path}:{first + 1}" in str(raised.value)
    skipped = load_records(path, skip_invalid=True).skipped
    assert [source for source, _ in skipped] == [f"{path}:{second + 1}"]


@PROPERTY
@given(rows=GOOD_ROWS, junk=st.lists(st.sampled_from(sorted(BAD_LINES)), min_size=1, max_size=4))
def test_skipping_accounts_for_every_line(tmp_path, rows, junk):
    """Loaded records plus skipped lines are all the lines: nothing vanishes."""
    lines = [as_line(row) for row in rows] + [BAD_LINES[name][0] for name in junk]
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    loaded = load_records(path, kind="reward", skip_invalid=True)

    assert len(loaded.records) + len(loaded.skipped) == len(lines)
    assert len(loaded.skipped) == len(junk)


BAD_CELLS = {
    "NaN reward": ("reward", "nan"),
    "infinite reward": ("reward", "-inf"),
    "text reward": ("reward", "high"),
    "empty response": ("response", ""),
    "whitespace response": ("response", "   "),
}


@PROPERTY
@given(rows=GOOD_ROWS, position=st.integers(0, 6), bad=st.sampled_from(sorted(BAD_CELLS)))
def test_one_bad_csv_cell_is_named_by_row_and_column(tmp_path, rows, position, bad):
    """CSV lines count the header as line 1."""
    position = min(position, len(rows) - 1)
    field, cell = BAD_CELLS[bad]
    frame = pd.DataFrame(rows).astype(object)
    frame.loc[position, field] = cell
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False, quoting=csv.QUOTE_ALL)

    with pytest.raises(DataError) as raised:
        load_records(path)

    assert (raised.value.line, raised.value.field) == (position + 2, field)


def write_empty(directory: Path, kind: str) -> Path:
    columns = {"prompt": [], "response": [], "reward": []}
    if kind == "datasets":
        datasets.Dataset.from_dict(columns).save_to_disk(directory / "empty")
        return directory / "empty"
    path = directory / f"empty.{kind}"
    if kind == "parquet":
        pd.DataFrame(columns).astype({"prompt": str, "response": str}).to_parquet(path)
    else:
        path.write_text({"jsonl": " \n\n", "json": "[]", "csv": "prompt,response,reward\n"}[kind])
    return path


@pytest.mark.parametrize(
    "kind",
    [
        "jsonl",
        "json",
        "csv",
        "parquet",
        "datasets",
    ],
)
def test_an_empty_input_of_any_format_is_an_error_naming_it(tmp_path, kind):
    path = write_empty(tmp_path, kind)

    with pytest.raises(DataError, match="holds no records") as raised:
        load_records(path)

    assert raised.value.file == str(path)


@PROPERTY
@given(
    words=st.lists(st.sampled_from(["cat", "bread", "the", "a", "!", "très", "🙂"]), max_size=60),
    max_prompt=st.integers(1, 12),
    max_response=st.integers(1, 6),
)
def test_a_prompt_longer_than_the_maximum_keeps_its_end(
    tiny_tokenizer, words, max_prompt, max_response
):
    text = " ".join(words)
    full = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]

    pair = tokenize_pair(tiny_tokenizer, text, text, max_prompt, max_response)

    assert pair.prompt_ids == (full[-max_prompt:] or [tiny_tokenizer.bos_token_id])
    assert pair.prompt_ids == encode_prompt(tiny_tokenizer, text, max_prompt)
    assert pair.response_ids == (full + [tiny_tokenizer.eos_token_id])[:max_response]


# ---------------------------------------------------------------------------------------------
# Through the command line: errors are messages and exit codes, never tracebacks

REWARDS_FILE = """
import time

def kind(prompts, responses):
    return [float("happy" in r) for r in responses]

def raises(prompts, responses):
    return [1 / 0 for _ in responses]

def hangs(prompts, responses):
    time.sleep(5)
    return [0.0 for _ in responses]

def too_few(prompts, responses):
    return [0.5 for _ in responses[1:]]

def nan_for_rain(prompts, responses):
    return [float("nan") if "rain" in p and "No 8" in r else 0.5 for p, r in zip(prompts, responses)]
"""


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def reward_rows(rewards: list[float]) -> list[dict]:
    """Kind and curt answers by turns, so the `kind` reward function varies too."""
    topics = ["bread", "tea", "rain", "cats", "trees", "boats"]
    return [
        {
            "prompt": f"Tell me about {topics[i % 6]}?",
            "response": f"I am happy {i}." if i % 2 else f"No {i}.",
            "reward": r,
        }
        for i, r in enumerate(rewards)
    ]


@pytest.fixture
def cli_config(tmp_path, tiny_llama_dir):
    """Write a config for `alol` with the given training rows and options; return its path.
    The run holds a value head that predicts 0, so A = R."""
    (tmp_path / "rewards.py").write_text(REWARDS_FILE)
    constant_value_head(tmp_path / "run", tiny_llama_dir)

    def make(rows: list[dict] | None = None, **options) -> str:
        data = write_rows(
            tmp_path / "train.jsonl", rows or reward_rows([0.1 * i for i in range(12)])
        )
        config = {
            "reference": str(tiny_llama_dir),
            "train_data": str(data),
            "val_fraction": 0.2,
            "run_dir": str(tmp_path / "run"),
            "max_steps": 2,
            "batch_size": 2,
            "max_prompt_length": 12,
            "max_response_length": 8,
            "generation_batch_size": 4,
            "precompute_batch_size": 4,
            **options,
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        return str(path)

    return make


def test_a_bad_record_stops_the_cli_with_its_location_and_skip_invalid_counts_it(
    cli_config, capsys, caplog
):
    rows = reward_rows([0.1 * i for i in range(12)])
    rows[4]["reward"] = "high"
    config = cli_config(rows)

    assert main(["advantage", config]) == 2
    assert (
        "train.jsonl:5: field 'reward': expected a number, got a string" in capsys.readouterr().err
    )

    caplog.set_level("WARNING")
    assert main(["advantage", config, "--skip-invalid"]) == 0
    assert "skipped 1 invalid record (first: " in caplog.text


def test_each_stage_reads_the_data_anew_but_a_skip_is_told_once(tmp_path, caplog, monkeypatch):
    """`alol run` chains stages that each read the training file; the warning is not repeated."""
    rows = reward_rows([0.1, 0.2, 0.3])
    rows[1]["reward"] = "high"
    data = write_rows(tmp_path / "train.jsonl", rows)
    reads = []
    monkeypatch.setattr(
        "alol.pipeline.inputs.load_records",
        lambda path, **options: reads.append(path) or load_records(path, **options),
    )
    caplog.set_level("WARNING")

    for _stage in range(2):
        assert len(load_data(str(data), PipelineConfig(skip_invalid=True))) == 2

    assert len(reads) == 2
    assert caplog.text.count("skipped 1 invalid record") == 1


@pytest.mark.parametrize(
    ("rewards", "message"),
    [
        ([0.7] * 12, "every reward equals 0.7 across the"),
        ([-1.0, -0.5] * 6, "none of the 10 training examples has a positive advantage"),
    ],
)
def test_training_with_nothing_to_learn_from_exits_with_the_reason(
    cli_config, capsys, rewards, message
):
    config = cli_config(reward_rows(rewards))

    assert main(["train", config, "--objective", "a_lol"]) == 2

    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("function", "options", "message"),
    [
        ("raises", [], "raised ZeroDivisionError: division by zero"),
        ("hangs", ["--reward-timeout", "0.2"], "did not finish within 0.2 s"),
        ("too_few", [], "returned 3 results for 4 records"),
    ],
)
def test_a_failing_reward_function_names_the_batch_by_its_first_and_last_records(
    tmp_path, cli_config, capsys, function, options, message
):
    config = cli_config(reward=f"{tmp_path / 'rewards.py'}:{function}")

    assert main(["advantage", config, *options]) == 2

    error = capsys.readouterr().err
    data = tmp_path / "train.jsonl"
    assert re.search(rf"on batch 0 \(records {data}:\d+ to {data}:\d+\)", error), error
    assert message in error


def test_a_nan_reward_names_its_one_record_by_file_and_line(tmp_path, cli_config, capsys):
    """Row 9 (0-based 8) is "No 8." to a prompt about rain: the only NaN. (All prompts train:
    the validation prompts are the same file's.)"""
    config = cli_config(
        reward=f"{tmp_path / 'rewards.py'}:nan_for_rain", val_data=str(tmp_path / "train.jsonl")
    )

    assert main(["advantage", config]) == 2

    error = capsys.readouterr().err
    assert f"for component 'nan_for_rain' of record {tmp_path / 'train.jsonl'}:9;" in error
    assert error.count("train.jsonl:") == 1


# ---------------------------------------------------------------------------------------------
# Tokenizers: without a pad token, with a chat template, padding on the left

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def variant(tiny_llama_dir: Path, directory: Path, name: str) -> Path:
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    if name == "no pad token":
        tokenizer.pad_token = None
        model.config.pad_token_id = None
        model.generation_config.pad_token_id = None
    elif name == "chat template":
        tokenizer.chat_template = CHAT_TEMPLATE
    elif name == "left padding":
        tokenizer.padding_side = "left"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.mark.parametrize("name", ["no pad token", "chat template", "left padding"])
def test_every_stage_runs_with_the_tokenizer(tmp_path, tiny_llama_dir, cli_config, name):
    reference = variant(tiny_llama_dir, tmp_path / "reference", name)
    assert (AutoTokenizer.from_pretrained(reference).pad_token is None) == (name == "no pad token")
    rows = [
        {**row, "prompt": [{"role": "user", "content": row["prompt"]}]}
        for row in reward_rows([0.1 * i for i in range(12)])
    ]
    test = write_rows(tmp_path / "test.jsonl", [{"prompt": r["prompt"]} for r in rows[:3]])
    config = cli_config(
        rows,
        reference=str(reference),
        test_data=str(test),
        reward=f"{tmp_path / 'rewards.py'}:kind",
        value_from_data=True,
        value_epochs=1,
        max_new_tokens=4,
    )

    assert main(["run", config, "--objectives", "a_lol"]) == 0

    samples = (tmp_path / "run/eval/a_lol/samples.jsonl").read_text().splitlines()
    assert len(samples) == 3
    if name == "chat template":
        assert json.loads(samples[0])["prompt"].startswith("<|user|> Tell me about")


def test_the_tokenizers_padding_side_changes_no_number(tiny_llama_dir, tiny_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    records = [RewardRecord(r["prompt"], r["response"], r["reward"]) for r in reward_rows([0.5, 1])]
    left = AutoTokenizer.from_pretrained(tiny_llama_dir, padding_side="left")
    config = AdvantageConfig(batch_size=2, max_prompt_length=12, show_progress=False)

    right_table = compute_advantages(model, tiny_tokenizer, records, config)
    left_table = compute_advantages(model, left, records, config)
    prompts = [r.prompt for r in records]
    decode = GenerationConfig(max_new_tokens=4, batch_size=2)

    np.testing.assert_array_equal(left_table.ref_token_logps, right_table.ref_token_logps)
    assert generate_responses(model, left, prompts, decode, False) == generate_responses(
        model, tiny_tokenizer, prompts, decode, False
    )


# ---------------------------------------------------------------------------------------------
# Inputs checked before work starts


def test_an_empty_model_folder_is_named_with_what_it_lacks(tmp_path, cli_config, capsys):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    config = cli_config()

    assert main(["sft", config, "--model", str(empty)]) == 2

    error = capsys.readouterr().err
    assert f"{empty} is not a model folder: it has no config.json" in error


def test_lengths_beyond_the_models_context_are_refused_up_front(cli_config, capsys):
    """The tiny Llama reads 1024 positions; 1000 + 128 would end in an IndexError mid-pass."""
    config = cli_config(max_prompt_length=1000, max_response_length=128)

    assert main(["advantage", config]) == 2

    error = capsys.readouterr().err
    assert "max_prompt_length (1000) + max_response_length (128) = 1128 tokens" in error
    assert "at most 1024 positions" in error


def test_a_training_run_that_decodes_checks_the_lengths_it_trains_on_too(cli_config, capsys):
    """Validation decodes 8 new tokens (1000 + 8 fit), but the examples hold 128-token responses."""
    config = cli_config(
        max_prompt_length=1000, max_response_length=128, max_new_tokens=8, eval_steps=1
    )

    assert main(["train", config, "--objective", "nll"]) == 2

    error = capsys.readouterr().err
    assert "max_prompt_length (1000) + max_response_length (128) = 1128 tokens" in error


def test_a_reward_file_with_a_syntax_error_names_the_file_and_line(tmp_path, cli_config, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("def score(prompts, responses):\n    return [1.0 for r in responses\n")
    config = cli_config(reward=f"{broken}:score")

    assert main(["advantage", config]) == 2

    error = capsys.readouterr().err
    assert f"reward file {broken}:2: syntax error" in error and "Traceback" not in error


def test_bf16_on_a_machine_without_a_gpu_trains_with_cpu_autocast(cli_config, monkeypatch):
    """transformers alone refuses bf16 without a GPU ("assign use_cpu"). (The CPU is taken to
    have native bf16: on one without, alol trains in float32, tests/test_precision.py.)"""
    monkeypatch.setattr("alol.train.precision.cpu_has_native_bf16", lambda: True)
    config = cli_config(bf16=True)

    assert main(["train", config, "--objective", "wbc", "--max-steps", "1"]) == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 trains on a GPU")
def test_fp16_without_a_gpu_says_which_option_to_use_instead(cli_config, capsys):
    config = cli_config(fp16=True)

    assert main(["train", config, "--objective", "wbc", "--max-steps", "1"]) == 2

    assert "train with bf16 (--bf16" in capsys.readouterr().err
