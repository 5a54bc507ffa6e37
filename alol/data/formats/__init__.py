"""Data files in, records out, and back: every format alol reads, validated record by record.

Every loaded record is validated. A problem raises `DataError` naming file, line and field or,
with `skip_invalid=True`, is listed in `LoadedData.skipped`: nothing is dropped silently.
Reading rows from a file is `alol.data.formats.readers`; turning a row into a record is
`alol.data.formats.parsers`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from alol.atomic import write_text
from alol.data.formats.fields import ParseOptions, warn_of_implausible_rewards
from alol.data.formats.parsers import FILE_KINDS, HH_REWARDS, PARSERS, as_object, detect_kind
from alol.data.formats.readers import read_rows
from alol.data.records import LoadedData, RankedRecord, Record
from alol.errors import DataError


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
    return parse_rows(
        read_rows(Path(path), split), file, kind, skip_invalid, hh_reward, allow_empty_responses
    )


def records_from_rows(
    rows: Iterable[dict[str, Any]],
    kind: str = "auto",
    *,
    skip_invalid: bool = False,
    hh_reward: str = "sigmoid",
    name: str = "dataset",
) -> LoadedData:
    """Records from rows already in memory (a `datasets.Dataset`, a list of dicts), validated
    as `load_records` validates a file's; errors name the row by its 0-based index."""
    return parse_rows(enumerate(rows), name, kind, skip_invalid, hh_reward, False)


def parse_rows(
    rows: Iterable[tuple[int, Any]],
    file: str,
    kind: str,
    skip_invalid: bool,
    hh_reward: str,
    allow_empty_responses: bool,
) -> LoadedData:
    """Validate (line, row) pairs into records of one kind; see `load_records`."""
    if kind not in FILE_KINDS:
        raise DataError(f"unknown kind {kind!r}; choose one of {', '.join(FILE_KINDS)}", file=file)
    if hh_reward not in HH_REWARDS:
        raise DataError(f"unknown hh_reward {hh_reward!r}; choose 'sigmoid' or 'raw'", file=file)
    options = ParseOptions(hh_reward, allow_empty_responses)
    resolved_kind = None if kind == "auto" else kind
    records: list[Record] = []
    skipped: list[tuple[str, str]] = []
    first_use_of_id: dict[str, str] = {}
    for line, row in rows:
        source = f"{file}:{line}"
        try:
            obj = as_object(row)
            resolved_kind = resolved_kind or detect_kind(obj)
            record = PARSERS[resolved_kind](obj, options)
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
    kind = "ranked" if resolved_kind == "hh" else resolved_kind
    stored = [(record.source, value) for record in records for value in _rewards_of(record)]
    warn_of_implausible_rewards([v for _, v in stored], [s for s, _ in stored], file)
    return LoadedData(records, kind, skipped, _duplicates(records))


def _rewards_of(record: Record) -> list[float]:
    if isinstance(record, RankedRecord):
        return list(record.rewards)
    reward = getattr(record, "total_reward", None)
    return [] if reward is None else [reward]


def _duplicates(records: list[Record]) -> int:
    """How many records repeat an earlier one's content (ids, sources and groups aside)."""
    seen: set[str] = set()
    repeats = 0
    for record in records:
        content = {k: v for k, v in asdict(record).items() if k not in ("id", "source", "group")}
        key = json.dumps(content, sort_keys=True, ensure_ascii=False)
        repeats += key in seen
        seen.add(key)
    return repeats


def _no_records_message(skipped: list[tuple[str, str]]) -> str:
    if not skipped:
        return "the file holds no records"
    source, reason = skipped[0]
    if len(skipped) == 1:
        return f"no valid records: the only one is invalid ({source}: {reason})"
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


def save_records(records: list[Record], path: str | Path) -> None:
    """Write records of one kind as JSON lines, atomically, so `load_records` reads them back equal.

    `source` is not written (the reloaded records point to the new file); `id` and `reward` are
    left out when they are None, and so is the reward of a record with a `label` (it follows
    from the label).
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
        if "label" in fields:
            fields.pop("reward", None)
        try:
            lines.append(json.dumps(fields, ensure_ascii=False, allow_nan=False))
        except ValueError as error:
            raise ValueError(
                f"record {record.source or record.id!r} cannot be saved: {error}"
            ) from None
    write_text(path, "\n".join(lines) + "\n")
