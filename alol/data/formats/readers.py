"""Rows out of files: JSON lines, JSON arrays, CSV, Parquet and `datasets` folders.

Readers yield (line, row): row is the raw object, or a DataError for a row that cannot even be
read (so skip_invalid can skip it). A problem with the whole file raises at once.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alol.data.formats.fields import clip_text, looks_like_messages
from alol.errors import DataError


def read_rows(path: Path, split: str) -> Iterator[tuple[int, Any]]:
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
        return value if looks_like_messages(value) else cell
    return cell


def _json_cell(name: str, cell: str) -> Any:
    try:
        return json.loads(cell)
    except (json.JSONDecodeError, RecursionError):
        raise DataError(
            f"expected JSON in this CSV cell, got {clip_text(cell)!r}", field=name
        ) from None


def _number_cell(name: str, cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise DataError(f"expected a number, got {clip_text(cell)!r}", field=name) from None


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
