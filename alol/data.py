"""Records, file formats, validation, tokenization and batching: everything from a data file to a batch.

Three record kinds cover offline RL data for language models:

- `RewardRecord`: a prompt, one response and its sequence reward. alol's native kind; TRL's
  prompt/completion, conversational and unpaired-preference (`label`) forms load as this kind.
- `PreferenceRecord`: a prompt with a chosen and a rejected response (TRL/DPO pairs).
- `RankedRecord`: a prompt with several responses and their rewards (PRO; the paper's HH files).

Every loaded record is validated. A problem raises `DataError` naming file, line and field or,
with `skip_invalid=True`, is listed in `LoadedData.skipped`: nothing is dropped silently.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import numbers
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from alol.io import write_text

logger = logging.getLogger(__name__)

Prompt = str | list[dict[str, str]]  # plain text, or chat messages [{"role", "content"}]

FILE_KINDS = ("auto", "reward", "preference", "ranked", "hh", "prompt")
HH_REWARDS = ("sigmoid", "raw")

CHOSEN_REWARD = (
    1.0  # the reward a chosen response gets when a preference pair becomes reward records
)
REJECTED_REWARD = 0.0  # ... and the rejected one: all a bare preference says is "chosen is better"

HH_ROLES = {"<|prompter|>": "user", "<|assistant|>": "assistant"}
HH_ASSISTANT_MARKER = "<|assistant|>"

PLAIN_ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}
PLAIN_TURN_SEPARATOR = "\n\n"
PLAIN_GENERATION_PROMPT = "Assistant:"
"""The plain chat template, used when the tokenizer has none. Messages render as

    User: How do I bake bread?

    Assistant: Mix flour, water, salt and yeast.

    User: And then?

    Assistant:

one "<Role>: <content>" per message (roles outside PLAIN_ROLE_NAMES are capitalised), separated
by a blank line, ending with "Assistant:". The response follows the colon as it is written; no
space is inserted."""

_REWARD_HINT = "a reward record needs 'prompt' and 'response' (or TRL's 'completion')"
_PREFERENCE_HINT = "a preference record needs 'prompt', 'chosen' and 'rejected'"
_RANKED_HINT = "a ranked record needs 'prompt', 'responses' and 'rewards'"
_HH_HINT = "an HH record needs 'prefix', 'suffix' and 'reward'"


class DataError(ValueError):
    """Bad input data. `str(error)` reads "FILE:LINE: field 'FIELD': MESSAGE".

    LINE is the 1-based line for JSON lines and JSON arrays (the line where the record starts),
    the CSV row number counting the header as line 1, and the 0-based row index for Parquet files
    and `datasets` folders. Parts that are not known are left out.
    """

    def __init__(
        self,
        message: str,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ):
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        location = ":".join(str(part) for part in (file, line) if part is not None)
        super().__init__(f"{location}: {self.reason}" if location else self.reason)

    @property
    def reason(self) -> str:
        """Field and message without the location: what `LoadedData.skipped` lists."""
        return f"field '{self.field}': {self.message}" if self.field else self.message

    def at(self, file: str, line: int) -> DataError:
        return DataError(self.message, file=file, line=line, field=self.field)


@dataclass
class RewardRecord:
    """One response to one prompt and its sequence reward (`None` until a reward function scores it)."""

    prompt: Prompt
    response: str
    reward: float | dict[str, float] | None = None
    id: str | None = None
    source: str = field(
        default="", compare=False
    )  # "file:line": where it came from, not what it is

    @property
    def total_reward(self) -> float | None:
        """The reward, or the sum of its components: rewards from several scorers add unweighted."""
        if isinstance(self.reward, dict):
            return float(sum(self.reward.values()))
        return self.reward


@dataclass
class PreferenceRecord:
    prompt: Prompt
    chosen: str
    rejected: str
    id: str | None = None
    source: str = field(default="", compare=False)


@dataclass
class RankedRecord:
    """Several responses to one prompt, in the order given, each with its reward."""

    prompt: Prompt
    responses: list[str]
    rewards: list[float]
    id: str | None = None
    source: str = field(default="", compare=False)


@dataclass
class PromptRecord:
    """A prompt alone: what evaluation and value fitting decode from."""

    prompt: Prompt
    id: str | None = None
    source: str = field(default="", compare=False)


Record = RewardRecord | PreferenceRecord | RankedRecord | PromptRecord


@dataclass
class LoadedData:
    records: list
    kind: str  # "reward", "preference" or "ranked"
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)


@dataclass(frozen=True)
class _ParseOptions:
    hh_reward: str
    allow_empty_responses: bool


# ----------------------------------------------------------------------------------------------
# Loading


def load_records(
    path: str | Path,
    kind: str = "auto",
    *,
    skip_invalid: bool = False,
    hh_reward: str = "sigmoid",
    split: str = "train",
    allow_empty_responses: bool = False,
) -> LoadedData:
    """Read and validate a data file, or a `datasets` folder, into records of one kind.

    Formats: `.jsonl`, `.json` (a list of objects, or one object per line), `.csv`, `.parquet`,
    and folders written by `datasets`' `save_to_disk` (a `DatasetDict` folder reads `split`).
    `kind="auto"` tells the kind from the first record's fields; `kind="hh"` is the PRO format of
    the paper's HH files, read as ranked records whose prompt is a user/assistant message list and
    whose rewards are `sigmoid(logit)` (`hh_reward="raw"` keeps the logits). The published HH
    files contain a few empty candidate responses, scored by the reward model; they are kept so
    the benchmark loads as published. Elsewhere an empty response is an error unless
    `allow_empty_responses=True`. Fields the record kind does not use are ignored.

    A bad record raises `DataError`; with `skip_invalid=True` it is skipped and listed in
    `skipped` instead. Problems with the file as a whole (missing, unreadable, malformed JSON
    array or CSV, no valid records) always raise.
    """
    file = str(path)
    if kind not in FILE_KINDS:
        raise DataError(f"unknown kind {kind!r}; choose one of {', '.join(FILE_KINDS)}", file=file)
    if hh_reward not in HH_REWARDS:
        raise DataError(f"unknown hh_reward {hh_reward!r}; choose 'sigmoid' or 'raw'", file=file)
    options = _ParseOptions(hh_reward, allow_empty_responses)
    resolved_kind = None if kind == "auto" else kind
    records: list[Record] = []
    skipped: list[tuple[str, str]] = []
    first_use_of_id: dict[str, str] = {}
    for line, row in _read_rows(Path(path), split):
        source = f"{file}:{line}"
        try:
            obj = _as_object(row)
            resolved_kind = resolved_kind or _detect_kind(obj)
            record = _PARSERS[resolved_kind](obj, options)
            record.source = source
            _claim_id(record, first_use_of_id)
        except DataError as error:
            located = error.at(file, line)
            if not skip_invalid:
                raise located from None
            skipped.append((source, located.reason))
            continue
        records.append(record)
    if not records:
        raise DataError(_no_records_message(skipped), file=file)
    return LoadedData(records, "ranked" if resolved_kind == "hh" else resolved_kind, skipped)


def _no_records_message(skipped: list[tuple[str, str]]) -> str:
    if not skipped:
        return "the file holds no records"
    source, reason = skipped[0]
    return f"no valid records: all {len(skipped)} are invalid (the first, {source}: {reason})"


def _claim_id(record: Record, first_use_of_id: dict[str, str]) -> None:
    """Ids key caches and results, so a second record with the same id is an error."""
    if record.id is None:
        return
    if record.id in first_use_of_id:
        raise DataError(
            f"duplicate id {record.id!r}, first used at {first_use_of_id[record.id]}; ids must be unique",
            field="id",
        )
    first_use_of_id[record.id] = record.source


# Readers yield (line, row): row is the raw object, or a DataError for a row that cannot even be
# read (so skip_invalid can skip it). A problem with the whole file raises at once.


def _read_rows(path: Path, split: str) -> Iterator[tuple[int, Any]]:
    if path.is_dir():
        return _dataset_rows(path, split)
    if not path.exists():
        raise DataError("no such file or folder", file=str(path))
    readers = {
        ".jsonl": _jsonl_rows,
        ".ndjson": _jsonl_rows,
        ".json": _json_rows,
        ".csv": _csv_rows,
        ".parquet": _parquet_rows,
        ".pq": _parquet_rows,
    }
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataError(
            f"unsupported file type {path.suffix!r}; use .jsonl, .json, .csv, .parquet "
            "or a folder written by datasets' save_to_disk",
            file=str(path),
        )
    return reader(path)


_UTF8_BOM = b"\xef\xbb\xbf"
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """One JSON value per line; blank lines are not records. Only '\\n' ends a line, because
    other Unicode line separators may stand unescaped inside JSON strings."""
    data = path.read_bytes().removeprefix(_UTF8_BOM)
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if raw.strip():
            yield number, _decode_json_line(raw)


def _decode_json_line(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return DataError(f"invalid UTF-8 at byte {error.start} of the line; save the file as UTF-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        return DataError(f"malformed JSON at column {error.colno}: {error.msg}")
    except RecursionError:
        return DataError("malformed JSON: nested too deeply")


def _json_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """A JSON array of records, or JSON lines in a file named .json (as the HH files are)."""
    data = path.read_bytes().removeprefix(_UTF8_BOM)
    if data.lstrip()[:1] == b"[":
        return _json_array_rows(_decode_utf8(data, str(path)), str(path))
    return _jsonl_rows(path)


def _json_array_rows(text: str, file: str) -> Iterator[tuple[int, Any]]:
    """Walk the array one element at a time, to report the line where each record starts.

    A syntax error inside an array cannot be skipped (nothing tells where the next record
    starts), so it always raises."""
    decoder = json.JSONDecoder()
    line, counted_to = 1, 0

    def line_at(position: int) -> int:
        nonlocal line, counted_to
        line += text.count("\n", counted_to, position)
        counted_to = position
        return line

    position = _JSON_SPACE.match(text, _JSON_SPACE.match(text).end() + 1).end()  # past '['
    while not text.startswith("]", position):
        try:
            element, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise DataError(f"malformed JSON: {error.msg}", file=file, line=error.lineno) from None
        except RecursionError:
            raise DataError(
                "malformed JSON: nested too deeply", file=file, line=line_at(position)
            ) from None
        yield line_at(position), element
        position = _JSON_SPACE.match(text, end).end()
        if text.startswith(",", position):
            position = _JSON_SPACE.match(text, position + 1).end()
            if text.startswith("]", position):
                raise DataError(
                    "malformed JSON: a ',' before the closing ']'",
                    file=file,
                    line=line_at(position),
                )
        elif not text.startswith("]", position):
            raise DataError(
                "malformed JSON: expected ',' or ']' after a record",
                file=file,
                line=line_at(position),
            )
    if text[position + 1 :].strip():
        raise DataError(
            "malformed JSON: extra data after the closing ']'", file=file, line=line_at(position)
        )


def _decode_utf8(data: bytes, file: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataError("invalid UTF-8; save the file as UTF-8", file=file, line=line) from None


def _csv_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """CSV with a header row. Line numbers count the header as line 1 (so they match the file
    unless a quoted cell spans several lines)."""
    file = str(path)
    text = _decode_utf8(path.read_bytes().removeprefix(_UTF8_BOM), file)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        for number, row in enumerate(reader, start=2):
            yield number, _decode_csv_row(row)
    except csv.Error as error:
        raise DataError(f"unreadable CSV: {error}", file=file, line=reader.line_num) from None


_CSV_JSON_FIELDS = ("responses", "rewards", "prefix", "suffix")
_CSV_TEXT_OR_MESSAGES_FIELDS = (
    "prompt",
    "response",
    "completion",
    "chosen",
    "rejected",
    "messages",
)


def _decode_csv_row(row: dict[str | None, str | None]) -> dict[str, Any] | DataError:
    """CSV cells are text; turn them into the values a JSON record would hold.

    `reward` is a number or a JSON object of components, an empty `reward`, `id` or `label` cell
    means the field is absent, `label` reads true/false, list fields hold JSON arrays, and a text
    field holding a JSON list of {role, content} messages is read as messages.
    """
    if None in row:
        return DataError("the row has more cells than the header has columns")
    decoded: dict[str, Any] = {}
    for name, cell in row.items():
        if cell is None or (cell == "" and name in ("reward", "id", "label")):
            continue  # a short row or an empty optional cell: the field is absent
        try:
            decoded[name] = _decode_csv_cell(name, cell)
        except DataError as error:
            return error
    return decoded


def _decode_csv_cell(name: str, cell: str) -> Any:
    if name == "reward":
        return _json_cell(name, cell) if cell.lstrip().startswith("{") else _number_cell(name, cell)
    if name == "label":
        return {"true": True, "false": False, "1": True, "0": False}.get(cell.strip().lower(), cell)
    if name in _CSV_JSON_FIELDS:
        return _json_cell(name, cell)
    if name in _CSV_TEXT_OR_MESSAGES_FIELDS and cell.lstrip().startswith("["):
        try:
            value = json.loads(cell)
        except (json.JSONDecodeError, RecursionError):
            return cell
        return value if _looks_like_messages(value) else cell
    return cell


def _json_cell(name: str, cell: str) -> Any:
    try:
        return json.loads(cell)
    except (json.JSONDecodeError, RecursionError):
        raise DataError(
            f"expected JSON in this CSV cell, got {_clip(cell)!r}", field=name
        ) from None


def _number_cell(name: str, cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise DataError(f"expected a number, got {_clip(cell)!r}", field=name) from None


def _looks_like_messages(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(message, dict) and {"role", "content"} <= message.keys() for message in value
    )


def _parquet_rows(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"not a readable Parquet file ({error})", file=str(path)) from None
    yield from enumerate(rows)


def _dataset_rows(path: Path, split: str) -> Iterator[tuple[int, Any]]:
    from datasets import DatasetDict, load_from_disk

    try:
        dataset = load_from_disk(str(path))
    except IndexError:  # datasets cannot load a saved dataset with zero rows
        raise DataError("holds no records", file=str(path)) from None
    except FileNotFoundError:
        raise DataError(
            "not a datasets folder; pass a folder written by Dataset.save_to_disk or a data file",
            file=str(path),
        ) from None
    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            raise DataError(
                f"no split {split!r}; this DatasetDict has {sorted(dataset)}: pass split=",
                file=str(path),
            )
        dataset = dataset[split]
    yield from enumerate(dataset.to_list())


# Parsing: one function per kind, from a raw object to a record. They raise DataError with the
# field; load_records adds file and line.


def _as_object(row: Any) -> dict[str, Any]:
    if isinstance(row, DataError):
        raise row
    if not isinstance(row, dict):
        raise DataError(f"expected a JSON object (one record), got {_type_name(row)}")
    return row


def _detect_kind(obj: dict[str, Any]) -> str:
    if "prefix" in obj and "suffix" in obj:
        return "hh"
    if "responses" in obj:
        return "ranked"
    if "chosen" in obj or "rejected" in obj:
        return "preference"
    if any(name in obj for name in ("response", "completion", "messages")):
        return "reward"
    if "prompt" in obj:
        return "prompt"
    raise DataError(
        f"cannot tell the record kind from its fields {_clip(str(sorted(obj)))}; {_REWARD_HINT}, "
        f"{_PREFERENCE_HINT}, {_RANKED_HINT} (or pass kind=)"
    )


def _parse_reward(obj: dict[str, Any], options: _ParseOptions) -> RewardRecord:
    if obj.get("prompt") is None and obj.get("messages") is not None:
        prompt, response = _split_conversation(obj["messages"], options)
    else:
        prompt = _prompt(_required(obj, "prompt", _REWARD_HINT), "prompt")
        name = _response_field_name(obj)
        response = _response(obj[name], name, options)
    reward = _reward(obj.get("reward"), "reward")
    if obj.get("label") is not None:
        if reward is not None:
            raise DataError("both 'reward' and 'label' are set; keep one", field="label")
        reward = _label_reward(obj["label"])
    return RewardRecord(prompt, response, reward, _record_id(obj))


def _response_field_name(obj: dict[str, Any]) -> str:
    present = [name for name in ("response", "completion") if obj.get(name) is not None]
    if len(present) == 2:
        raise DataError(
            "both 'response' and 'completion' are set ('completion' is TRL's name for 'response'); keep one",
            field="completion",
        )
    if not present:
        raise DataError(f"required field is missing; {_REWARD_HINT}", field="response")
    return present[0]


def _split_conversation(value: Any, options: _ParseOptions) -> tuple[Prompt, str]:
    """TRL's conversational language-modelling form: the last (assistant) message is the response."""
    messages = _messages(_list(value, "messages"), "messages")
    if not messages or messages[-1]["role"] != "assistant":
        raise DataError("the last message must be the assistant's response", field="messages")
    return messages[:-1], _response(messages[-1:], "messages", options)


def _label_reward(label: Any) -> float:
    """TRL's unpaired preference: `label` true marks a desirable completion."""
    if not isinstance(label, bool):
        raise DataError(f"expected true or false, got {_type_name(label)}", field="label")
    return CHOSEN_REWARD if label else REJECTED_REWARD


def _parse_preference(obj: dict[str, Any], options: _ParseOptions) -> PreferenceRecord:
    chosen = _required(obj, "chosen", _PREFERENCE_HINT)
    rejected = _required(obj, "rejected", _PREFERENCE_HINT)
    if obj.get("prompt") is None:
        prompt, chosen, rejected = _implicit_prompt(chosen, rejected)
    else:
        prompt = _prompt(obj["prompt"], "prompt")
    return PreferenceRecord(
        prompt,
        _response(chosen, "chosen", options),
        _response(rejected, "rejected", options),
        _record_id(obj),
    )


def _implicit_prompt(chosen: Any, rejected: Any) -> tuple[Prompt, Any, Any]:
    """TRL's implicit prompt: the messages `chosen` and `rejected` share before they differ.

    The last message of each is always the response, even when both are identical."""
    if not (isinstance(chosen, list) and isinstance(rejected, list)):
        raise DataError(
            "required field is missing; the prompt may be left out only when 'chosen' and "
            "'rejected' are message lists that share their leading messages",
            field="prompt",
        )
    chosen, rejected = _messages(chosen, "chosen"), _messages(rejected, "rejected")
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    return chosen[:shared], chosen[shared:], rejected[shared:]


def _parse_ranked(obj: dict[str, Any], options: _ParseOptions) -> RankedRecord:
    prompt = _prompt(_required(obj, "prompt", _RANKED_HINT), "prompt")
    responses = _list(_required(obj, "responses", _RANKED_HINT), "responses")
    rewards = _list(_required(obj, "rewards", _RANKED_HINT), "rewards")
    _check_candidates(responses, rewards, "responses", "rewards")
    return RankedRecord(
        prompt,
        [_response(value, f"responses[{i}]", options) for i, value in enumerate(responses)],
        [_number(value, f"rewards[{i}]") for i, value in enumerate(rewards)],
        _record_id(obj),
    )


def _check_candidates(
    responses: list, rewards: list, responses_name: str, rewards_name: str
) -> None:
    if not responses:
        raise DataError("no responses; a ranked record needs at least one", field=responses_name)
    if len(responses) != len(rewards):
        raise DataError(
            f"{len(responses)} responses but {len(rewards)} rewards; give one reward per response",
            field=rewards_name,
        )


def _parse_hh(obj: dict[str, Any], options: _ParseOptions) -> RankedRecord:
    """PRO's HH format; `prefix` holds one identical copy of the turns per candidate: use the first."""
    prefix = _list(_required(obj, "prefix", _HH_HINT), "prefix")
    if not prefix:
        raise DataError("no turns; expected a list of lists of turns", field="prefix")
    turns = _list(prefix[0], "prefix[0]")
    if not turns or turns[-1] != HH_ASSISTANT_MARKER:
        raise DataError(
            f"the last turn must be the bare {HH_ASSISTANT_MARKER!r} marker", field="prefix[0]"
        )
    suffix = _list(_required(obj, "suffix", _HH_HINT), "suffix")
    logits = _list(_required(obj, "reward", _HH_HINT), "reward")
    _check_candidates(suffix, logits, "suffix", "reward")
    logits = [_number(value, f"reward[{i}]") for i, value in enumerate(logits)]
    return RankedRecord(
        [_hh_message(turn, f"prefix[0][{i}]") for i, turn in enumerate(turns[:-1])],
        [_text(value, f"suffix[{i}]") for i, value in enumerate(suffix)],
        logits if options.hh_reward == "raw" else [_sigmoid(logit) for logit in logits],
        _record_id(obj),
    )


def _hh_message(turn: Any, name: str) -> dict[str, str]:
    turn = _text(turn, name)
    for marker, role in HH_ROLES.items():
        if turn.startswith(marker):
            return {"role": role, "content": turn[len(marker) :]}
    raise DataError(
        f"a turn must start with '<|prompter|>' or '<|assistant|>', got {_clip(turn)!r}", field=name
    )


def _sigmoid(logit: float) -> float:
    """Written per sign so that exp never overflows."""
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    exp_logit = math.exp(logit)
    return exp_logit / (1.0 + exp_logit)


def _parse_prompt(obj: dict[str, Any], options: _ParseOptions) -> PromptRecord:
    return PromptRecord(
        _prompt(_required(obj, "prompt", "a prompt record needs 'prompt'"), "prompt"),
        _record_id(obj),
    )


_PARSERS: dict[str, Callable[[dict[str, Any], _ParseOptions], Record]] = {
    "prompt": _parse_prompt,
    "reward": _parse_reward,
    "preference": _parse_preference,
    "ranked": _parse_ranked,
    "hh": _parse_hh,
}


# Field checks


def _required(obj: dict[str, Any], name: str, hint: str) -> Any:
    if obj.get(name) is None:
        raise DataError(f"required field is missing; {hint}", field=name)
    return obj[name]


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"expected a string, got {_type_name(value)}", field=name)
    return value


def _list(value: Any, name: str) -> list:
    if not isinstance(value, list):
        raise DataError(f"expected a list, got {_type_name(value)}", field=name)
    return value


def _prompt(value: Any, name: str) -> Prompt:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return _messages(value, name)
    raise DataError(
        f"expected a string or a list of {{role, content}} messages, got {_type_name(value)}",
        field=name,
    )


def _messages(value: list, name: str) -> list[dict[str, str]]:
    """Chat messages, keeping only role and content (the parts a chat template renders)."""
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise DataError(
                f"expected a {{role, content}} message, got {_type_name(message)}",
                field=f"{name}[{i}]",
            )
        for key in ("role", "content"):
            _text(message.get(key), f"{name}[{i}].{key}")
    return [{"role": message["role"], "content": message["content"]} for message in value]


def _response(value: Any, name: str, options: _ParseOptions) -> str:
    """Response text; a conversational response is a list holding one assistant message."""
    if isinstance(value, list):
        messages = _messages(value, name)
        roles = [message["role"] for message in messages]
        if roles != ["assistant"]:
            raise DataError(
                f"expected one assistant message as the response, got roles {roles}", field=name
            )
        value = messages[0]["content"]
    text = _text(value, name)
    if not text.strip() and not options.allow_empty_responses:
        raise DataError(
            "empty response; remove the record, or pass allow_empty_responses=True if empty "
            "replies are meant to be trained on",
            field=name,
        )
    return text


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DataError(f"expected a number, got {_type_name(value)}", field=name)
    try:
        number = float(value)
    except OverflowError:
        raise DataError("number too large", field=name) from None
    if not math.isfinite(number):
        raise DataError(f"must be a finite number, got {number}", field=name)
    return number


def _reward(value: Any, name: str) -> float | dict[str, float] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        if not value:
            raise DataError("no components; give a number or {component: number, ...}", field=name)
        return {str(key): _number(component, f"{name}.{key}") for key, component in value.items()}
    return _number(value, name)


def _record_id(obj: dict[str, Any]) -> str | None:
    value = obj.get("id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DataError(f"expected a string or an integer, got {_type_name(value)}", field="id")
    return str(value)


def _type_name(value: Any) -> str:
    """JSON's names for types, as the user wrote the data in JSON terms."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, numbers.Real):
        return "a number"
    names = {str: "a string", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# ----------------------------------------------------------------------------------------------
# Saving


def save_records(records: list[Record], path: str | Path) -> None:
    """Write records of one kind as JSON lines, atomically, so `load_records` reads them back equal.

    `source` is not written (the reloaded records point to the new file); `id` and `reward` are
    left out when they are None.
    """
    if not records:
        raise ValueError("no records to save; an empty file could not be loaded back")
    kinds = {type(record).__name__ for record in records}
    if len(kinds) > 1:
        raise ValueError(
            f"records of several kinds ({', '.join(sorted(kinds))}) cannot share a file; "
            "convert them first (to_reward_records, to_preference_records or to_ranked_records)"
        )
    lines = []
    for record in records:
        fields = {
            key: value
            for key, value in asdict(record).items()
            if key != "source" and value is not None
        }
        try:
            lines.append(json.dumps(fields, ensure_ascii=False, allow_nan=False))
        except ValueError as error:
            raise ValueError(
                f"record {record.source or record.id!r} cannot be saved: {error}"
            ) from None
    write_text(path, "\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------------
# Conversions between kinds


def to_reward_records(records: Iterable[Record]) -> list[RewardRecord]:
    """One reward record per response: what the reward-based objectives train on.

    A preference pair gives its chosen response reward CHOSEN_REWARD (1.0) and its rejected one
    REJECTED_REWARD (0.0), all that a bare preference says; score them with a reward function for
    graded rewards. A ranked record gives one record per candidate, with its reward. Ids gain a
    suffix ("/chosen", "/rejected", "/<candidate index>") so they stay unique.
    """
    converted: list[RewardRecord] = []
    for record in records:
        if isinstance(record, RewardRecord):
            converted.append(record)
        elif isinstance(record, PreferenceRecord):
            for response, reward, name in (
                (record.chosen, CHOSEN_REWARD, "chosen"),
                (record.rejected, REJECTED_REWARD, "rejected"),
            ):
                converted.append(
                    RewardRecord(
                        record.prompt, response, reward, _sub_id(record.id, name), record.source
                    )
                )
        elif isinstance(record, RankedRecord):
            converted.extend(
                RewardRecord(
                    record.prompt, response, reward, _sub_id(record.id, str(i)), record.source
                )
                for i, (response, reward) in enumerate(
                    zip(record.responses, record.rewards, strict=True)
                )
            )
        else:
            raise _not_a_record(record)
    return converted


def to_preference_records(records: Iterable[Record]) -> list[PreferenceRecord]:
    """Preference pairs (for DPO) from ranked records, or from reward records grouped by prompt.

    A ranked record pairs its best response (the first, if several share the best reward) as
    chosen with each strictly worse response as rejected: K candidates give up to K - 1 pairs.
    A candidate tied with the best gives no pair: it is dropped, and the number dropped is
    logged as a warning. Reward records are first grouped by identical prompt, as in
    `to_ranked_records`; a prompt with a single response cannot form a pair and is dropped (and
    counted) there. Preference records pass through.
    """
    pairs: list[PreferenceRecord] = []
    ties = 0
    for record in _group_reward_records(records):
        if isinstance(record, PreferenceRecord):
            pairs.append(record)
            continue
        record_pairs, record_ties = _best_against_worse(record)
        pairs.extend(record_pairs)
        ties += record_ties
    if ties:
        logger.warning(
            "dropped %d candidate(s) tied with the best response of their prompt: a tie is no preference",
            ties,
        )
    return pairs


def _best_against_worse(record: RankedRecord) -> tuple[list[PreferenceRecord], int]:
    best = max(range(len(record.rewards)), key=record.rewards.__getitem__)
    pairs, ties = [], 0
    for i, (response, reward) in enumerate(zip(record.responses, record.rewards, strict=True)):
        if i == best:
            continue
        if reward == record.rewards[best]:
            ties += 1
            continue
        pairs.append(
            PreferenceRecord(
                record.prompt,
                record.responses[best],
                response,
                _sub_id(record.id, f"{best}>{i}"),
                record.source,
            )
        )
    return pairs, ties


def to_ranked_records(records: Iterable[Record]) -> list[RankedRecord]:
    """Ranked records (for PRO) from preference pairs, or from reward records grouped by prompt.

    A preference pair becomes [chosen, rejected] with rewards [1.0, 0.0]. Reward records with an
    identical prompt become one ranked record, candidates in input order, placed where the
    prompt first appears; each needs a reward (its `total_reward`). A prompt with a single
    response cannot be ranked: it is dropped, and the number dropped is logged as a warning.
    """
    ranked: list[RankedRecord] = []
    for record in _group_reward_records(records):
        if isinstance(record, PreferenceRecord):
            record = RankedRecord(
                record.prompt,
                [record.chosen, record.rejected],
                [CHOSEN_REWARD, REJECTED_REWARD],
                record.id,
                record.source,
            )
        ranked.append(record)
    return ranked


def _group_reward_records(records: Iterable[Record]) -> list[PreferenceRecord | RankedRecord]:
    """Replace reward records by one ranked record per prompt (2+ responses); keep the others."""
    slots: list[PreferenceRecord | RankedRecord | list[RewardRecord]] = []
    groups: dict[str, list[RewardRecord]] = {}
    for record in records:
        if isinstance(record, RewardRecord):
            key = json.dumps(record.prompt, sort_keys=True)
            if key not in groups:
                groups[key] = []
                slots.append(groups[key])
            groups[key].append(record)
        elif isinstance(record, PreferenceRecord | RankedRecord):
            slots.append(record)
        else:
            raise _not_a_record(record)
    grouped: list[PreferenceRecord | RankedRecord] = []
    singles = 0
    for slot in slots:
        if not isinstance(slot, list):
            grouped.append(slot)
        elif len(slot) == 1:
            singles += 1
        else:
            grouped.append(_ranked_from_group(slot))
    if singles:
        logger.warning(
            "dropped %d prompt(s) with a single response: one response cannot be ranked or paired",
            singles,
        )
    return grouped


def _ranked_from_group(group: list[RewardRecord]) -> RankedRecord:
    for record in group:
        if record.total_reward is None:
            raise DataError(
                "no reward; score the records with a reward function first", field="reward"
            ).at(*_split_source(record.source))
    first = group[0]
    return RankedRecord(
        first.prompt,
        [record.response for record in group],
        [record.total_reward for record in group],
        first.id,
        first.source,
    )


def _split_source(source: str) -> tuple[str, int | None]:
    file, _, line = source.rpartition(":")
    return (file, int(line)) if line.isdigit() else (source, None)


def _sub_id(record_id: str | None, suffix: str) -> str | None:
    return None if record_id is None else f"{record_id}/{suffix}"


def _not_a_record(value: Any) -> TypeError:
    return TypeError(
        f"expected RewardRecord, PreferenceRecord or RankedRecord, got {type(value).__name__}"
    )


# ----------------------------------------------------------------------------------------------
# Prompts, tokens and batches


def render_prompt(prompt: Prompt, tokenizer) -> str:
    """The text the model sees before its response.

    A string passes through unchanged. Messages go through the tokenizer's chat template with
    the generation prompt added, or through the plain template (PLAIN_GENERATION_PROMPT) when
    the tokenizer has none.
    """
    if isinstance(prompt, str):
        return prompt
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    return render_plain_chat(prompt)


def render_plain_chat(messages: list[dict[str, str]]) -> str:
    turns = [
        f"{PLAIN_ROLE_NAMES.get(m['role'], m['role'].capitalize())}: {m['content']}"
        for m in messages
    ]
    return PLAIN_TURN_SEPARATOR.join([*turns, PLAIN_GENERATION_PROMPT])


@dataclass
class TokenizedPair:
    prompt_ids: list[int]
    response_ids: list[int]  # ends with EOS

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


def tokenize_pair(
    tokenizer,
    prompt_text: str,
    response_text: str,
    max_prompt_length: int,
    max_response_length: int,
) -> TokenizedPair:
    """Token ids of one (prompt, response), ready for `collate_pairs`.

    - The tokenizer adds no special tokens (a chat template writes its own), except that an
      empty prompt becomes [BOS] ([EOS] without a BOS), so position 0 is never a response token.
    - A long prompt is cut from the LEFT: the turns nearest the response matter most.
    - The response is cut from the RIGHT to max_response_length - 1 tokens, then EOS is
      appended. EOS belongs to the response and is trained, so the policy learns to stop.

    Prompt and response are tokenized apart, so the ids at their seam can differ from tokenizing
    the joined text; decoding continues from the same prompt ids, so training and decoding agree.
    """
    if max_prompt_length < 1 or max_response_length < 1:
        raise ValueError(
            f"max_prompt_length and max_response_length must be at least 1, got {max_prompt_length} "
            f"and {max_response_length}"
        )
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(
            "the tokenizer has no EOS token; set tokenizer.eos_token before tokenizing"
        )
    prompt_ids = encode_prompt(tokenizer, prompt_text, max_prompt_length)
    response_ids = _encode(tokenizer, response_text)[: max_response_length - 1] + [eos]
    return TokenizedPair(prompt_ids, response_ids)


def encode_prompt(tokenizer, prompt_text: str, max_prompt_length: int) -> list[int]:
    """Prompt ids exactly as training, value fitting and decoding see them.

    Cut from the left; an empty prompt becomes [BOS] ([EOS] without a BOS) so that position 0
    is never a response token and decoding always has a context.
    """
    prompt_ids = _encode(tokenizer, prompt_text)[-max_prompt_length:]
    if not prompt_ids:
        eos = tokenizer.eos_token_id
        prompt_ids = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos]
    return prompt_ids


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def padded_width(length: int, pad_to_multiple_of: int | None) -> int:
    """The width a batch whose longest row has `length` tokens is padded to."""
    multiple = pad_to_multiple_of or 1
    return -(-length // multiple) * multiple


def locate_response_tokens(response_mask: Tensor) -> Tensor:
    """`[2, N]` long: the row and column of every response token, in row-major order.

    collate_pairs computes them on the CPU and ships them with the batch. Computed on an
    accelerator they would cost a host sync (the count N is data-dependent), mid-forward, where
    it stalls the host until the decoder has run instead of queueing the rest of the step.
    """
    return response_mask.nonzero().T


def collate_pairs(
    pairs: list[TokenizedPair],
    pad_token_id: int,
    padding_side: str = "right",
    pad_to_multiple_of: int | None = None,
) -> dict[str, Tensor]:
    """Pad pairs into one batch (shapes in docs/architecture.md).

    Returns input_ids [B, L] long (prompt, then response, padding after or before),
    attention_mask [B, L] long (1 on real tokens), response_mask [B, L] bool (True on
    response tokens, EOS included) and response_positions [2, N] long (row and column of each
    response token, found here on the CPU so the training step needs no host sync). Right
    padding suits training; left padding ends every prompt in the same column, as batched
    decoding wants. `pad_to_multiple_of` rounds L up, so compiled code meets few distinct shapes.
    """
    if not pairs:
        raise ValueError("no pairs to collate")
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    if pad_token_id is None:
        raise ValueError(
            "no pad token id; set tokenizer.pad_token (for example to tokenizer.eos_token)"
        )
    width = padded_width(max(pair.length for pair in pairs), pad_to_multiple_of)
    input_ids = torch.full((len(pairs), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(pairs), width), dtype=torch.long)
    response_mask = torch.zeros((len(pairs), width), dtype=torch.bool)
    for row, pair in enumerate(pairs):
        start = 0 if padding_side == "right" else width - pair.length
        response_start = start + len(pair.prompt_ids)
        end = start + pair.length
        input_ids[row, start:end] = torch.tensor(
            pair.prompt_ids + pair.response_ids, dtype=torch.long
        )
        attention_mask[row, start:end] = 1
        response_mask[row, response_start:end] = True
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "response_mask": response_mask,
        "response_positions": locate_response_tokens(response_mask),
    }


def length_grouped_order(
    indices: list[int],
    lengths: list[int],
    batch_size: int,
    generator: torch.Generator,
    megabatch_factor: int = 50,
) -> list[int]:
    """Reorder a sampled stream of dataset rows so each batch holds rows of similar length.

    `indices` are dataset rows in sampling order (repeats allowed, as priority sampling draws
    with replacement) and `lengths[k]` is the token length of `indices[k]`. The stream is cut
    into consecutive megabatches of batch_size * megabatch_factor draws; each is sorted by length
    (longest first) and cut into batches, and its full batches are shuffled with `generator` so
    no long-to-short trend remains. A final short batch stays last, so batches of the result
    start every `batch_size` items. The result is a permutation of `indices` (no draw leaves its
    megabatch): the same draws, so the same sampling distribution, with less padding.
    """
    if batch_size < 1 or megabatch_factor < 1:
        raise ValueError(
            f"batch_size and megabatch_factor must be at least 1, got {batch_size} and {megabatch_factor}"
        )
    if len(lengths) != len(indices):
        raise ValueError(
            f"{len(indices)} indices but {len(lengths)} lengths; give the length of each drawn row"
        )
    megabatch_size = batch_size * megabatch_factor
    order: list[int] = []
    for start in range(0, len(indices), megabatch_size):
        positions = range(start, min(start + megabatch_size, len(indices)))
        longest_first = [
            indices[k] for k in sorted(positions, key=lengths.__getitem__, reverse=True)
        ]
        batches = [
            longest_first[i : i + batch_size] for i in range(0, len(longest_first), batch_size)
        ]
        full_count = len(longest_first) // batch_size
        shuffled = [batches[i] for i in torch.randperm(full_count, generator=generator).tolist()]
        for batch in shuffled + batches[full_count:]:
            order.extend(batch)
    return order
