"""Records, formats, conversions, tokenization and collation: every format and record kind loads, bad data is named precisely, batches are exact."""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import SHARED_HH
from datasets import Dataset, DatasetDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alol.data.batching import length_grouped_order
from alol.data.collate import collate_pairs
from alol.data.conversions import to_preference_records, to_ranked_records, to_reward_records
from alol.data.formats import load_records, save_records
from alol.data.records import LoadedData, PreferenceRecord, PromptRecord, RankedRecord, RewardRecord
from alol.data.tokenize import (
    PLAIN_GENERATION_PROMPT,
    TokenizedPair,
    encode_prompt,
    render_prompt,
    tokenize_pair,
)
from alol.errors import DataError

REWARD_ROWS = [
    {"prompt": "Hi", "response": "Hello!", "reward": 0.5, "id": "a"},
    {"prompt": "Bye", "response": "See you.", "reward": -1.5, "id": "b"},
]
REWARD_RECORDS = [
    RewardRecord("Hi", "Hello!", 0.5, "a"),
    RewardRecord("Bye", "See you.", -1.5, "b"),
]

USER_HI = {"role": "user", "content": "Hi"}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def load_one(tmp_path: Path, row: dict, **kwargs) -> object:
    return load_records(write_jsonl(tmp_path / "d.jsonl", [row]), **kwargs).records[0]


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# ----------------------------------------------------------------------------------------------
# Formats


def as_jsonl(tmp_path, rows):
    return write_jsonl(tmp_path / "d.jsonl", rows), [1, 2]


def as_json_lines_in_json_file(tmp_path, rows):
    return write_jsonl(tmp_path / "d.json", rows), [1, 2]


def as_json_array(tmp_path, rows):
    """indent=2 puts '[' on line 1, the first record on lines 2-7, the second from line 8."""
    path = tmp_path / "d.json"
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return path, [2, 8]


def as_csv(tmp_path, rows):
    return write_csv(tmp_path / "d.csv", rows), [2, 3]


def as_parquet(tmp_path, rows):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path, [0, 1]


def as_dataset_folder(tmp_path, rows):
    Dataset.from_list(rows).save_to_disk(tmp_path / "ds")
    return tmp_path / "ds", [0, 1]


@pytest.mark.parametrize(
    "write",
    [as_jsonl, as_json_lines_in_json_file, as_json_array, as_csv, as_parquet, as_dataset_folder],
)
def test_every_format_loads_the_same_records_with_their_line_or_row(tmp_path, write):
    path, lines = write(tmp_path, REWARD_ROWS)

    loaded = load_records(path)

    assert loaded == LoadedData(REWARD_RECORDS, "reward", [])
    assert [record.source for record in loaded.records] == [f"{path}:{line}" for line in lines]


def test_a_dataset_dict_folder_reads_the_requested_split(tmp_path):
    splits = {"train": REWARD_ROWS[:1], "test": REWARD_ROWS[1:]}
    DatasetDict({name: Dataset.from_list(rows) for name, rows in splits.items()}).save_to_disk(
        tmp_path / "dd"
    )

    assert load_records(tmp_path / "dd").records == REWARD_RECORDS[:1]
    assert load_records(tmp_path / "dd", split="test").records == REWARD_RECORDS[1:]
    with pytest.raises(
        DataError, match=r"no split 'dev'; this DatasetDict has \['test', 'train'\]"
    ):
        load_records(tmp_path / "dd", split="dev")


def test_csv_cells_hold_reward_components_message_prompts_and_lists(tmp_path):
    """Empty optional cells mean absent; JSON in list-valued or message-valued cells is decoded."""
    messages = json.dumps([USER_HI])
    write_csv(
        tmp_path / "r.csv",
        [
            {"prompt": messages, "response": "Hello", "reward": '{"a": 1, "b": 2}', "id": ""},
            {"prompt": "[not json", "response": "Yes", "reward": "", "id": "x"},
        ],
    )
    write_csv(
        tmp_path / "k.csv", [{"prompt": "Hi", "responses": '["A", "B"]', "rewards": "[1, 0]"}]
    )
    write_csv(tmp_path / "u.csv", [{"prompt": "Hi", "completion": "Hey", "label": "true"}])

    assert load_records(tmp_path / "r.csv").records == [
        RewardRecord([USER_HI], "Hello", {"a": 1.0, "b": 2.0}),
        RewardRecord("[not json", "Yes", None, "x"),
    ]
    assert load_records(tmp_path / "k.csv").records == [RankedRecord("Hi", ["A", "B"], [1.0, 0.0])]
    assert load_records(tmp_path / "u.csv").records == [RewardRecord("Hi", "Hey", 1.0, label=True)]


def test_a_byte_order_mark_and_blank_lines_are_not_records(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(REWARD_ROWS[0]).encode() + b"\r\n\n  \n")

    loaded = load_records(path)

    assert loaded.records == REWARD_RECORDS[:1]
    assert loaded.skipped == []


# ----------------------------------------------------------------------------------------------
# Record kinds


def test_reward_records_take_a_number_a_dict_of_components_or_no_reward(tmp_path):
    """total_reward sums components: 1.0 + (-0.25) = 0.75."""
    rows = [
        {"prompt": "p", "response": "r", "reward": 2},
        {"prompt": "p", "response": "r", "reward": {"helpful": 1.0, "short": -0.25}},
        {"prompt": "p", "response": "r"},
        {"prompt": "p", "response": "r", "reward": None, "id": 7, "extra": [1, 2]},
    ]

    records = load_records(write_jsonl(tmp_path / "d.jsonl", rows)).records

    assert [record.reward for record in records] == [
        2.0,
        {"helpful": 1.0, "short": -0.25},
        None,
        None,
    ]
    assert [record.total_reward for record in records] == [2.0, 0.75, None, None]
    assert records[3].id == "7"


@pytest.mark.parametrize(
    ("row", "kind", "record"),
    [
        ({"prompt": "p", "response": "r", "reward": 1}, "reward", RewardRecord("p", "r", 1.0)),
        (
            {"prompt": "p", "chosen": "c", "rejected": "x"},
            "preference",
            PreferenceRecord("p", "c", "x"),
        ),
        (
            {"prompt": "p", "responses": ["a", "b"], "rewards": [1, 0.5], "id": "k"},
            "ranked",
            RankedRecord("p", ["a", "b"], [1.0, 0.5], "k"),
        ),
    ],
)
def test_auto_tells_each_kind_from_its_fields(tmp_path, row, kind, record):
    loaded = load_records(write_jsonl(tmp_path / "d.jsonl", [row]))

    assert (loaded.kind, loaded.records) == (kind, [record])


def test_an_explicit_kind_checks_the_fields_of_that_kind(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", REWARD_ROWS)

    with pytest.raises(DataError, match=r"d\.jsonl:1: field 'chosen': required field is missing"):
        load_records(path, kind="preference")


# ----------------------------------------------------------------------------------------------
# TRL's formats load unchanged


def test_trl_completion_is_a_synonym_of_response(tmp_path):
    record = load_one(tmp_path, {"prompt": "p", "completion": "c", "reward": 1})

    assert record == RewardRecord("p", "c", 1.0)


def test_trl_conversational_prompt_and_completion(tmp_path):
    row = {"prompt": [USER_HI], "completion": [{"role": "assistant", "content": "Hello"}]}

    assert load_one(tmp_path, row) == RewardRecord([USER_HI], "Hello")


def test_trl_conversational_messages_end_with_the_response(tmp_path):
    row = {"messages": [USER_HI, {"role": "assistant", "content": "Hello"}], "reward": 0.5}

    assert load_one(tmp_path, row) == RewardRecord([USER_HI], "Hello", 0.5)


def test_trl_preference_with_an_explicit_conversational_prompt(tmp_path):
    row = {
        "prompt": [USER_HI],
        "chosen": [{"role": "assistant", "content": "Hello"}],
        "rejected": [{"role": "assistant", "content": "Go away"}],
    }

    assert load_one(tmp_path, row) == PreferenceRecord([USER_HI], "Hello", "Go away")


def test_trl_preference_with_an_implicit_prompt_takes_the_shared_leading_messages(tmp_path):
    shared = [
        USER_HI,
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Joke?"},
    ]
    row = {
        "chosen": [*shared, {"role": "assistant", "content": "Knock knock"}],
        "rejected": [*shared, {"role": "assistant", "content": "No"}],
    }

    assert load_one(tmp_path, row) == PreferenceRecord(shared, "Knock knock", "No")


def test_an_implicit_prompt_needs_message_lists(tmp_path):
    with pytest.raises(
        DataError,
        match=r"field 'prompt': required field is missing; the prompt may be left out only",
    ):
        load_one(tmp_path, {"chosen": "The sky is blue.", "rejected": "The sky is green."})


def test_trl_unpaired_preference_label_becomes_reward_one_or_zero_and_is_kept(tmp_path):
    rows = [
        {"prompt": "p", "completion": "good", "label": True},
        {"prompt": "p", "completion": "bad", "label": False},
    ]

    loaded = load_records(write_jsonl(tmp_path / "d.jsonl", rows))

    assert loaded.kind == "reward"
    assert loaded.records == [
        RewardRecord("p", "good", 1.0, label=True),
        RewardRecord("p", "bad", 0.0, label=False),
    ]
    save_records(loaded.records, tmp_path / "again.jsonl")
    assert load_records(tmp_path / "again.jsonl").records == loaded.records


def test_a_label_next_to_a_reward_is_ambiguous(tmp_path):
    with pytest.raises(DataError, match=r"field 'label': both 'reward' and 'label' are set"):
        load_one(tmp_path, {"prompt": "p", "completion": "c", "reward": 1, "label": True})


# ----------------------------------------------------------------------------------------------
# The HH files of the paper (PRO format)

HH_ROW = {
    "prefix": [["<|prompter|>Hi", "<|assistant|>Hello", "<|prompter|>Help?", "<|assistant|>"]] * 2,
    "suffix": ["Sure.", "No."],
    "reward": [0.0, math.log(3.0)],
    "sft_index": 0,
    "meta": {"path": "x", "line_num": 1},
}
HH_PROMPT = [
    USER_HI,
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "Help?"},
]


def test_hh_records_become_ranked_records_with_sigmoid_rewards(tmp_path):
    """sigmoid(0) = 1/2 and sigmoid(ln 3) = 3 / (3 + 1) = 3/4; the logits are kept beside them
    (PRO's temperatures read them)."""
    loaded = load_records(write_jsonl(tmp_path / "hh.json", [HH_ROW]))

    assert loaded.kind == "ranked"
    assert loaded.records == [
        RankedRecord(HH_PROMPT, ["Sure.", "No."], [0.5, 0.75], reward_logits=[0.0, math.log(3.0)])
    ]


def test_hh_raw_keeps_the_reward_model_logits(tmp_path):
    record = load_one(tmp_path, HH_ROW, kind="hh", hh_reward="raw")

    assert record.rewards == [0.0, math.log(3.0)]


@pytest.mark.parametrize(
    ("turns", "field", "message"),
    [
        (
            ["<|prompter|>Hi", "<|assistant|>Hello"],
            "prefix[0]",
            "the last turn must be the bare '<|assistant|>'",
        ),
        (
            ["Hi", "<|assistant|>"],
            "prefix[0][0]",
            "a turn must start with '<|prompter|>' or '<|assistant|>'",
        ),
    ],
)
def test_hh_turns_are_checked(tmp_path, turns, field, message):
    with pytest.raises(
        DataError, match=rf"d\.jsonl:1: field '{re.escape(field)}': {re.escape(message)}"
    ):
        load_one(tmp_path, {**HH_ROW, "prefix": [turns]})


needs_hh = pytest.mark.skipif(
    not SHARED_HH.is_dir(), reason=f"the HH data folder {SHARED_HH} is absent"
)


def raw_hh_rows(name: str) -> list[dict]:
    return [
        json.loads(line) for line in (SHARED_HH / name).read_text(encoding="utf-8").splitlines()
    ]


@needs_hh
def test_the_hh_dev_file_loads_280_ranked_records_with_sigmoid_rewards():
    raw = raw_hh_rows("sampled_dev.json")

    loaded = load_records(SHARED_HH / "sampled_dev.json")

    assert (loaded.kind, len(loaded.records), loaded.skipped) == ("ranked", 280, [])
    for record, row in zip(loaded.records, raw, strict=True):
        torch.testing.assert_close(record.rewards, [sigmoid(logit) for logit in row["reward"]])
        assert record.responses == row["suffix"]
        assert [m["role"] for m in record.prompt] == ["user", "assistant"] * (
            len(record.prompt) // 2
        ) + ["user"]


@needs_hh
@pytest.mark.parametrize(
    ("name", "count"), [("harmless_base.json", 2312), ("helpful_base.json", 2354)]
)
def test_the_hh_test_files_load_completely(name, count):
    loaded = load_records(SHARED_HH / name, hh_reward="raw")

    assert len(loaded.records) == count
    assert [record.rewards for record in loaded.records] == [
        row["reward"] for row in raw_hh_rows(name)
    ]


@needs_hh
def test_the_hh_dev_file_keeps_its_empty_candidate_and_round_trips(tmp_path):
    """The published dev file has one empty candidate response; reloading it must allow that."""
    records = load_records(SHARED_HH / "sampled_dev.json").records
    assert sum(response == "" for record in records for response in record.responses) == 1

    save_records(records, tmp_path / "dev.jsonl")

    assert load_records(tmp_path / "dev.jsonl", allow_empty_responses=True).records == records


@needs_hh
def test_hh_pairs_drop_exactly_the_tied_candidates(caplog):
    records = load_records(SHARED_HH / "sampled_dev.json").records
    ties = sum(record.rewards[0] == record.rewards[1] for record in records)

    with caplog.at_level(logging.WARNING, logger="alol.data.conversions"):
        pairs = to_preference_records(records)

    assert ties == 3  # the dev file has three pairs whose two logits are equal
    assert len(pairs) == 280 - 3
    assert "dropped 3 candidate(s) tied with the best response" in caplog.text


# ----------------------------------------------------------------------------------------------
# Errors name file, line and field

GOOD = json.dumps(REWARD_ROWS[0])


@pytest.mark.parametrize(
    ("second_line", "field", "message"),
    [
        ('{"prompt": "p", "response": ', None, "malformed JSON at column 29: Expecting value"),
        ("[1, 2]", None, "expected a JSON object (one record), got a list"),
        ('{"prompt": "p", "reward": 1}', "response", "required field is missing"),
        (
            '{"prompt": 3, "response": "r"}',
            "prompt",
            "expected a string or a list of {role, content} messages",
        ),
        (
            '{"prompt": "p", "response": "r", "reward": "high"}',
            "reward",
            "expected a number, got a string",
        ),
        (
            '{"prompt": "p", "response": "r", "reward": true}',
            "reward",
            "expected a number, got a boolean",
        ),
        (
            '{"prompt": "p", "response": "r", "reward": NaN}',
            "reward",
            "must be a finite number, got nan",
        ),
        (
            '{"prompt": "p", "response": "r", "reward": -Infinity}',
            "reward",
            "must be a finite number, got -inf",
        ),
        (
            '{"prompt": "p", "response": "r", "reward": {"a": 1, "b": NaN}}',
            "reward.b",
            "must be a finite number",
        ),
        ('{"prompt": "p", "response": "r", "reward": {}}', "reward", "no components"),
        ('{"prompt": "p", "response": ""}', "response", "empty response"),
        ('{"prompt": "p", "response": " \\n\\t"}', "response", "empty response"),
        (
            '{"prompt": [{"role": "user"}], "response": "r"}',
            "prompt[0].content",
            "expected a string, got null",
        ),
        ('{"prompt": "p", "response": "r", "id": "a"}', "id", "duplicate id 'a', first used at"),
        ('{"prompt": "p", "response": "r", "id": 1.5}', "id", "expected a string or an integer"),
    ],
)
def test_a_bad_jsonl_record_is_named_by_file_line_and_field(tmp_path, second_line, field, message):
    path = write_lines(tmp_path / "d.jsonl", [GOOD, second_line])

    with pytest.raises(DataError) as caught:
        load_records(path)

    error = caught.value
    assert (error.file, error.line, error.field) == (str(path), 2, field)
    location = f"{path}:2: field '{field}': " if field else f"{path}:2: "
    assert str(error).startswith(location + message)


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        (
            {"prompt": "p", "responses": ["a", "b"], "rewards": [1]},
            "rewards",
            "2 responses but 1 rewards",
        ),
        ({"prompt": "p", "responses": [], "rewards": []}, "responses", "no responses"),
        (
            {"prompt": "p", "responses": ["a", " "], "rewards": [1, 0]},
            "responses[1]",
            "empty response",
        ),
        (
            {"prompt": "p", "responses": "a", "rewards": [1]},
            "responses",
            "expected a list, got a string",
        ),
        (
            {"prompt": "p", "chosen": "c", "rejected": [USER_HI]},
            "rejected",
            "expected one assistant message",
        ),
        ({"prompt": "p", "chosen": "c"}, "rejected", "required field is missing"),
    ],
)
def test_ranked_and_preference_fields_are_checked(tmp_path, row, field, message):
    with pytest.raises(DataError, match=rf"d\.jsonl:1: field '{re.escape(field)}': {message}"):
        load_one(tmp_path, row)


def test_invalid_utf8_is_named_by_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(GOOD.encode() + b'\n{"prompt": "\xff"}\n')

    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:2: invalid UTF-8"):
        load_records(path)


def test_a_record_of_no_known_kind_lists_the_kinds(tmp_path):
    with pytest.raises(
        DataError, match=r"d\.jsonl:1: cannot tell the record kind from its fields \['question'\]"
    ):
        load_one(tmp_path, {"question": "q"})


@pytest.mark.parametrize("content", ["", "\n \n"])
def test_an_empty_file_is_an_error(tmp_path, content):
    path = tmp_path / "d.jsonl"
    path.write_text(content)

    with pytest.raises(DataError, match=r"d\.jsonl: the file holds no records"):
        load_records(path)


def test_an_unknown_kind_is_an_error(tmp_path):
    with pytest.raises(
        DataError, match=r"unknown kind 'rewards'; choose one of auto, reward, preference"
    ):
        load_records(write_jsonl(tmp_path / "d.jsonl", REWARD_ROWS), kind="rewards")


def test_a_missing_file_or_unsupported_type_is_an_error(tmp_path):
    (tmp_path / "d.txt").write_text("x")

    with pytest.raises(DataError, match=r"nope\.jsonl: no such file or folder"):
        load_records(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match=r"d\.txt: unsupported file type '\.txt'"):
        load_records(tmp_path / "d.txt")
    with pytest.raises(DataError, match=r"not a datasets folder"):
        load_records(tmp_path)


def test_csv_errors_count_the_header_as_line_one(tmp_path):
    rows = [dict(row, id="") for row in REWARD_ROWS] + [
        {"prompt": "p", "response": "r", "reward": "nan", "id": ""}
    ]
    path = write_csv(tmp_path / "d.csv", rows)

    with pytest.raises(
        DataError, match=rf"^{re.escape(str(path))}:4: field 'reward': must be a finite number"
    ):
        load_records(path)


def test_csv_reward_text_that_is_no_number_is_named(tmp_path):
    path = write_csv(tmp_path / "d.csv", [{"prompt": "p", "response": "r", "reward": "high"}])

    with pytest.raises(DataError, match=r"d\.csv:2: field 'reward': expected a number, got 'high'"):
        load_records(path)


def test_parquet_errors_name_the_row_index(tmp_path):
    path, _ = as_parquet(tmp_path, [REWARD_ROWS[0], {**REWARD_ROWS[1], "response": ""}])

    with pytest.raises(
        DataError, match=rf"^{re.escape(str(path))}:1: field 'response': empty response"
    ):
        load_records(path)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ('[\n  {"prompt": "p",\n   "response": }\n]', 3, "malformed JSON: Expecting value"),
        (
            '[\n  {"prompt": "p", "response": "r"}\n  {"prompt": "q"}\n]',
            3,
            "malformed JSON: expected ',' or ']'",
        ),
        (
            '[\n  {"prompt": "p", "response": "r"},\n]',
            3,
            "malformed JSON: a ',' before the closing ']'",
        ),
        (
            '[{"prompt": "p", "response": "r"}]\n[]',
            1,
            "malformed JSON: extra data after the closing ']'",
        ),
    ],
)
def test_a_malformed_json_array_is_named_by_line(tmp_path, text, line, message):
    path = tmp_path / "d.json"
    path.write_text(text)

    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:{line}: {re.escape(message)}"):
        load_records(path, skip_invalid=True)


# ----------------------------------------------------------------------------------------------
# Skipping invalid records


def test_skip_invalid_lists_every_skipped_record_with_its_reason(tmp_path):
    path = write_lines(
        tmp_path / "d.jsonl",
        [
            json.dumps(REWARD_ROWS[0]),
            "{oops",
            '{"prompt": "p", "response": "r", "reward": NaN}',
            json.dumps(REWARD_ROWS[0]),
            json.dumps(REWARD_ROWS[1]),
        ],
    )

    loaded = load_records(path, skip_invalid=True)

    assert loaded.records == REWARD_RECORDS
    assert [source for source, _ in loaded.skipped] == [f"{path}:2", f"{path}:3", f"{path}:4"]
    reasons = [reason for _, reason in loaded.skipped]
    assert reasons[0].startswith("malformed JSON")
    assert reasons[1] == "field 'reward': must be a finite number, got nan"
    assert reasons[2] == f"field 'id': duplicate id 'a', first used at {path}:1; ids must be unique"


def test_skip_invalid_with_nothing_valid_left_is_an_error(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", ["{oops", "[]"])

    with pytest.raises(
        DataError, match=r"no valid records: all 2 are invalid \(the first, .*d\.jsonl:1: malformed"
    ):
        load_records(path, skip_invalid=True)


# ----------------------------------------------------------------------------------------------
# Saving


@pytest.mark.parametrize(
    "records",
    [
        [
            RewardRecord("p", "r", 0.1, "a"),
            RewardRecord([USER_HI], "Hi ✓\n", {"x": 1.5, "y": -2.0}),
            RewardRecord("p", "r\u2028s"),
        ],
        [PreferenceRecord([USER_HI], "c", "r", "k")],
        [RankedRecord("p", ["a", "b", "c"], [0.3, 1e-9, -7.0])],
    ],
)
def test_saved_records_load_back_equal(tmp_path, records):
    path = tmp_path / "out" / "records.jsonl"

    save_records(records, path)
    loaded = load_records(path)

    assert loaded.records == records
    assert [record.source for record in loaded.records] == [
        f"{path}:{i + 1}" for i in range(len(records))
    ]
    assert list(path.parent.iterdir()) == [path]  # the atomic write left no temporary file


def test_saving_refuses_nothing_or_mixed_kinds(tmp_path):
    with pytest.raises(ValueError, match="no records to save"):
        save_records([], tmp_path / "d.jsonl")
    with pytest.raises(ValueError, match=r"several kinds \(PreferenceRecord, RewardRecord\)"):
        save_records(
            [RewardRecord("p", "r"), PreferenceRecord("p", "c", "r")], tmp_path / "d.jsonl"
        )


# ----------------------------------------------------------------------------------------------
# Conversions


def test_a_preference_pair_becomes_chosen_one_and_rejected_zero():
    pair = PreferenceRecord("p", "good", "bad", "k", "f:1")

    assert to_reward_records([pair]) == [
        RewardRecord("p", "good", 1.0, "k/chosen"),
        RewardRecord("p", "bad", 0.0, "k/rejected"),
    ]


def test_a_ranked_record_becomes_one_reward_record_per_candidate():
    ranked = RankedRecord("p", ["a", "b"], [0.2, 0.7], "k")

    assert to_reward_records([ranked]) == [
        RewardRecord("p", "a", 0.2, "k/0"),
        RewardRecord("p", "b", 0.7, "k/1"),
    ]


def test_ranked_to_pairs_sets_the_best_against_each_worse_and_drops_ties(caplog):
    """Best is 'b' (0.9, first of the two maxima); 'd' ties it and is dropped; 'a', 'c' are worse."""
    ranked = RankedRecord("p", ["a", "b", "c", "d"], [0.2, 0.9, 0.5, 0.9], "k")

    with caplog.at_level(logging.WARNING, logger="alol.data.conversions"):
        pairs = to_preference_records([ranked])

    assert pairs == [
        PreferenceRecord("p", "b", "a", "k/1>0"),
        PreferenceRecord("p", "b", "c", "k/1>2"),
    ]
    assert "dropped 1 candidate(s) tied with the best response" in caplog.text


def test_reward_records_group_by_identical_prompt_and_singletons_are_dropped(caplog):
    records = [
        RewardRecord("p", "a", 1.0),
        RewardRecord([USER_HI], "x", {"u": 1.0, "v": 1.0}),
        RewardRecord("q", "lonely", 0.0),
        RewardRecord("p", "b", 3.0),
        RewardRecord([USER_HI], "y", 0.5),
    ]

    with caplog.at_level(logging.WARNING, logger="alol.data.conversions"):
        ranked = to_ranked_records(records)
        pairs = to_preference_records(records)

    assert ranked == [
        RankedRecord("p", ["a", "b"], [1.0, 3.0]),
        RankedRecord([USER_HI], ["x", "y"], [2.0, 0.5]),
    ]
    assert pairs == [PreferenceRecord("p", "b", "a"), PreferenceRecord([USER_HI], "x", "y")]
    assert caplog.text.count("dropped 1 prompt(s) with a single response") == 2


def test_grouping_needs_rewards_and_names_the_record():
    records = [
        RewardRecord("p", "a", 1.0, source="d.jsonl:1"),
        RewardRecord("p", "b", None, source="d.jsonl:2"),
    ]

    with pytest.raises(
        DataError, match=r"^d\.jsonl:2: field 'reward': no reward; score the records"
    ):
        to_ranked_records(records)


def test_a_preference_pair_becomes_a_two_candidate_ranking():
    assert to_ranked_records([PreferenceRecord("p", "c", "r", "k")]) == [
        RankedRecord("p", ["c", "r"], [1.0, 0.0], "k")
    ]


def test_conversions_refuse_what_is_not_a_record():
    with pytest.raises(
        TypeError, match="expected RewardRecord, PreferenceRecord or RankedRecord, got dict"
    ):
        to_reward_records([{"prompt": "p"}])


# ----------------------------------------------------------------------------------------------
# Rendering prompts

CONVERSATION = [
    {"role": "system", "content": "Be kind."},
    USER_HI,
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "Bye"},
]


def test_a_text_prompt_passes_through_unchanged_without_a_chat_template(tiny_tokenizer):
    assert render_prompt("  Raw text\n", tiny_tokenizer) == "  Raw text\n"


CHAT_TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant]{% endif %}"
)


def test_a_text_prompt_to_a_chat_model_is_one_user_turn_of_its_template(tiny_tokenizer, caplog):
    """An instruct model given raw text answers badly (SmolLM2-Instruct: often nothing)."""
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = CHAT_TEMPLATE

    with caplog.at_level("INFO", logger="alol.data.tokenize"):
        first = render_prompt("What is 84 plus 32?", tokenizer)
        render_prompt("And 2 plus 2?", tokenizer)

    assert first == "[user]What is 84 plus 32?\n[assistant]"
    assert render_prompt("What is 84 plus 32?", tokenizer, "raw") == "What is 84 plus 32?"
    assert caplog.text.count("one user turn") == 1


def test_an_unknown_string_prompt_mode_is_refused(tiny_tokenizer):
    with pytest.raises(ValueError, match="string_prompts must be one of"):
        render_prompt("Hi", tiny_tokenizer, "template")


def test_messages_without_a_chat_template_use_the_plain_template(tiny_tokenizer):
    assert tiny_tokenizer.chat_template is None

    text = render_prompt(CONVERSATION, tiny_tokenizer)

    assert text == "System: Be kind.\n\nUser: Hi\n\nAssistant: Hello\n\nUser: Bye\n\nAssistant:"
    assert text.endswith(PLAIN_GENERATION_PROMPT)


def test_messages_with_a_chat_template_use_it_with_the_generation_prompt(tiny_tokenizer):
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = CHAT_TEMPLATE

    text = render_prompt(CONVERSATION[1:], tokenizer)

    assert text == "[user]Hi\n[assistant]Hello\n[user]Bye\n[assistant]"


# ----------------------------------------------------------------------------------------------
# Tokenization


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_a_pair_adds_no_special_tokens_but_the_closing_eos(tiny_tokenizer):
    pair = tokenize_pair(tiny_tokenizer, "Human: hi", " Hello there.", 64, 64)

    assert pair.prompt_ids == encode(tiny_tokenizer, "Human: hi")
    assert pair.response_ids == encode(tiny_tokenizer, " Hello there.") + [
        tiny_tokenizer.eos_token_id
    ]


def test_a_long_prompt_loses_its_start_and_a_cut_response_ends_where_it_was_cut(tiny_tokenizer):
    """max_response_length 5 keeps the first 5 response tokens and no EOS: an EOS after a cut
    would teach the policy to stop mid-sentence (the A-LoL authors append EOS, then cut)."""
    prompt = "The quick brown fox jumps over the lazy dog."
    response = "Please be kind and helpful, never rude or harmful."

    pair = tokenize_pair(
        tiny_tokenizer, prompt, response, max_prompt_length=3, max_response_length=5
    )

    assert pair.prompt_ids == encode(tiny_tokenizer, prompt)[-3:]
    assert pair.response_ids == encode(tiny_tokenizer, response)[:5]
    assert tiny_tokenizer.eos_token_id not in pair.response_ids
    assert pair.prompt_cut and pair.response_cut


def test_a_response_that_fits_with_its_eos_is_not_cut(tiny_tokenizer):
    response = encode(tiny_tokenizer, " Hello there.")
    fits = tokenize_pair(tiny_tokenizer, "Hi", " Hello there.", 8, len(response) + 1)
    one_short = tokenize_pair(tiny_tokenizer, "Hi", " Hello there.", 8, len(response))

    assert fits.response_ids == response + [tiny_tokenizer.eos_token_id]
    assert not fits.response_cut and not fits.prompt_cut
    assert one_short.response_ids == response and one_short.response_cut


def test_an_empty_prompt_becomes_bos_or_eos_so_position_zero_is_prompt(tiny_tokenizer):
    assert tokenize_pair(tiny_tokenizer, "", "Hi", 8, 8).prompt_ids == [tiny_tokenizer.bos_token_id]

    without_bos = copy.deepcopy(tiny_tokenizer)
    without_bos.bos_token = None
    assert tokenize_pair(without_bos, "", "Hi", 8, 8).prompt_ids == [tiny_tokenizer.eos_token_id]


def llama_style(tokenizer, chat_template: str | None = None):
    """The tiny tokenizer made to add BOS before every text, as Llama's does."""
    from tokenizers import processors

    bos = copy.deepcopy(tokenizer)
    bos._tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos.bos_token_id)]
    )
    bos.chat_template = chat_template
    return bos


def test_a_tokenizer_that_adds_bos_keeps_it_exactly_once_even_after_a_cut(tiny_tokenizer):
    bos_tokenizer = llama_style(tiny_tokenizer)
    bos = bos_tokenizer.bos_token_id
    text = "The quick brown fox jumps over the lazy dog."
    plain = encode(tiny_tokenizer, text)

    assert encode_prompt(bos_tokenizer, text, 64) == [bos, *plain]
    assert encode_prompt(bos_tokenizer, text, 4) == [bos, *plain[-3:]]
    assert tokenize_pair(bos_tokenizer, text, " Hi", 64, 8).response_ids[0] != bos


def test_a_chat_template_that_writes_bos_itself_is_not_given_a_second_one(tiny_tokenizer):
    template = "<s>{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    bos_tokenizer = llama_style(tiny_tokenizer, chat_template=template)
    rendered = render_prompt([{"role": "user", "content": "Hi"}], bos_tokenizer)

    ids = encode_prompt(bos_tokenizer, rendered, 64)

    assert rendered.startswith("<s>") and ids.count(bos_tokenizer.bos_token_id) == 1
    assert ids[0] == bos_tokenizer.bos_token_id


def test_a_tokenizer_without_its_own_bos_gets_none_added(tiny_tokenizer):
    assert encode_prompt(tiny_tokenizer, "Hi there", 64) == encode(tiny_tokenizer, "Hi there")


def test_lengths_below_one_are_refused(tiny_tokenizer):
    with pytest.raises(ValueError, match="must be at least 1, got 0 and 8"):
        tokenize_pair(tiny_tokenizer, "p", "r", 0, 8)


# ----------------------------------------------------------------------------------------------
# Collation

PAIRS = [TokenizedPair([5, 6], [7, 1]), TokenizedPair([8], [9, 10, 11, 1])]


def test_right_padding_puts_padding_after_the_response():
    batch = collate_pairs(PAIRS, pad_token_id=0)

    torch.testing.assert_close(
        batch["input_ids"], torch.tensor([[5, 6, 7, 1, 0], [8, 9, 10, 11, 1]])
    )
    torch.testing.assert_close(
        batch["attention_mask"], torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    )
    torch.testing.assert_close(
        batch["response_mask"], torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    )


def test_left_padding_puts_padding_before_the_prompt():
    batch = collate_pairs(PAIRS, pad_token_id=0, padding_side="left")

    torch.testing.assert_close(
        batch["input_ids"], torch.tensor([[0, 5, 6, 7, 1], [8, 9, 10, 11, 1]])
    )
    torch.testing.assert_close(
        batch["attention_mask"], torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    )
    torch.testing.assert_close(
        batch["response_mask"], torch.tensor([[0, 0, 0, 1, 1], [0, 1, 1, 1, 1]], dtype=torch.bool)
    )


def test_padding_to_a_multiple_only_adds_padding_columns():
    plain = collate_pairs(PAIRS, pad_token_id=0)
    rounded = collate_pairs(PAIRS, pad_token_id=0, pad_to_multiple_of=4)

    assert rounded["input_ids"].shape == (2, 8)
    for key in ("input_ids", "attention_mask", "response_mask"):
        torch.testing.assert_close(rounded[key][:, :5], plain[key])
        assert not rounded[key][:, 5:].bool().any(), key  # pad id 0, mask off
    torch.testing.assert_close(rounded["response_positions"], plain["response_positions"])


def test_collation_refuses_bad_arguments():
    with pytest.raises(ValueError, match="padding_side must be 'right' or 'left'"):
        collate_pairs(PAIRS, 0, "middle")
    with pytest.raises(ValueError, match="no pad token id"):
        collate_pairs(PAIRS, None)


# ----------------------------------------------------------------------------------------------
# Length grouping


def padded_tokens(order: list[int], lengths_of: dict[int, int] | list[int], batch_size: int) -> int:
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return sum(len(batch) * max(lengths_of[i] for i in batch) for batch in batches)


def test_length_grouping_is_a_permutation_that_cuts_padding():
    generator = torch.Generator().manual_seed(0)
    row_lengths = torch.randint(1, 200, (500,), generator=generator).tolist()
    draws = torch.randint(0, 500, (1000,), generator=generator).tolist()  # with replacement

    order = length_grouped_order(
        draws, [row_lengths[i] for i in draws], 8, generator, megabatch_factor=10
    )

    assert sorted(order) == sorted(draws)
    assert padded_tokens(order, row_lengths, 8) < 0.7 * padded_tokens(draws, row_lengths, 8)


def test_length_grouping_keeps_each_draw_in_its_megabatch_and_the_short_batch_last():
    """Batch 2 x factor 2 = megabatches of 4 draws: [0..3], [4..7], then [8, 9, 10]."""
    draws = list(range(11))
    lengths = [3, 9, 1, 5, 2, 8, 4, 7, 6, 1, 5]

    order = length_grouped_order(
        draws, lengths, 2, torch.Generator().manual_seed(1), megabatch_factor=2
    )

    assert sorted(order[:4]) == [0, 1, 2, 3] and sorted(order[4:8]) == [4, 5, 6, 7]
    assert order[8:] in (
        [8, 10, 9],
        [10, 8, 9],
    )  # sorted longest first; 9 (length 1) is the short batch
    for start in range(0, 8, 2):
        assert {*order[start : start + 2]} in ({1, 3}, {0, 2}, {5, 7}, {4, 6})


def test_length_grouping_depends_only_on_the_generator_seed():
    lengths = list(range(100))
    orders = [
        length_grouped_order(list(range(100)), lengths, 4, torch.Generator().manual_seed(s), 5)
        for s in (3, 3, 4)
    ]

    assert orders[0] == orders[1] != orders[2]


def test_length_grouping_needs_one_length_per_draw():
    with pytest.raises(ValueError, match="3 indices but 2 lengths"):
        length_grouped_order([0, 1, 2], [5, 6], 2, torch.Generator())


# ----------------------------------------------------------------------------------------------
# Properties

FIELD_NAMES = [
    "prompt",
    "response",
    "completion",
    "reward",
    "chosen",
    "rejected",
    "responses",
    "rewards",
    "id",
    "label",
]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY_SETTINGS
@given(
    lines=st.lists(st.binary(max_size=40) | st.text(max_size=40).map(str.encode), max_size=6),
    skip=st.booleans(),
)
def test_junk_lines_give_data_errors_or_skips_never_another_exception(tmp_path, lines, skip):
    path = tmp_path / "junk.jsonl"
    path.write_bytes(b"\n".join(lines))

    try:
        loaded = load_records(path, skip_invalid=skip)
    except DataError:
        return
    assert loaded.records


@PROPERTY_SETTINGS
@given(
    rows=st.lists(
        st.dictionaries(st.sampled_from(FIELD_NAMES), JSON_VALUES, max_size=5),
        min_size=1,
        max_size=4,
    )
)
def test_arbitrary_json_objects_give_data_errors_or_valid_records(tmp_path, rows):
    path = write_lines(tmp_path / "objects.jsonl", [json.dumps(row) for row in rows])

    try:
        loaded = load_records(path, skip_invalid=True)
    except DataError:
        return
    assert len(loaded.records) + len(loaded.skipped) == len(rows)


TEXT = st.text(min_size=1, max_size=20).filter(str.strip)
FINITE = st.floats(allow_nan=False, allow_infinity=False)


@PROPERTY_SETTINGS
@given(
    records=st.lists(
        st.builds(
            RewardRecord,
            prompt=st.text(max_size=20)
            | st.lists(st.fixed_dictionaries({"role": TEXT, "content": st.text()})),
            response=TEXT,
            reward=st.none() | FINITE | st.dictionaries(st.text(max_size=5), FINITE, min_size=1),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_any_valid_reward_records_round_trip(tmp_path, records):
    save_records(records, tmp_path / "r.jsonl")

    assert load_records(tmp_path / "r.jsonl").records == records


@settings(max_examples=100, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(0, 50), st.integers(1, 500))),
    batch_size=st.integers(1, 9),
    factor=st.integers(1, 4),
    seed=st.integers(0, 2**31),
)
def test_length_grouping_always_returns_a_permutation(data, batch_size, factor, seed):
    draws, lengths = [d for d, _ in data], [n for _, n in data]

    order = length_grouped_order(
        draws, lengths, batch_size, torch.Generator().manual_seed(seed), factor
    )

    assert sorted(order) == sorted(draws)


def test_prompts_are_encoded_without_special_tokens_and_cut_from_the_left(tiny_tokenizer):
    ids = tiny_tokenizer("Please be kind and helpful", add_special_tokens=False)["input_ids"]
    assert encode_prompt(tiny_tokenizer, "Please be kind and helpful", 640) == ids
    assert encode_prompt(tiny_tokenizer, "Please be kind and helpful", 2) == ids[-2:]


def test_an_empty_prompt_is_encoded_as_bos(tiny_tokenizer):
    assert encode_prompt(tiny_tokenizer, "", 640) == [tiny_tokenizer.bos_token_id]


def test_records_with_only_a_prompt_load_as_prompt_records(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "Hi?"}\n{"prompt": [{"role": "user", "content": "Yo"}]}\n')
    loaded = load_records(path)
    assert loaded.kind == "prompt"
    assert loaded.records == [
        PromptRecord("Hi?"),
        PromptRecord([{"role": "user", "content": "Yo"}]),
    ]


def test_exact_duplicates_are_kept_and_counted_ids_aside(tmp_path):
    rows = [
        {"prompt": "Hi", "response": "Hello", "reward": 1.0, "id": "a"},
        {"prompt": "Hi", "response": "Hello", "reward": 1.0, "id": "b"},
        {"prompt": "Hi", "response": "Hello", "reward": 0.5},
        {"prompt": "Hi", "response": "Hello", "reward": 1.0},
    ]
    loaded = load_records(write_jsonl(tmp_path / "dup.jsonl", rows))
    assert len(loaded.records) == 4 and loaded.duplicates == 2
