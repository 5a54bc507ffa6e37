"""alol's own errors, so a CLI or a caller can catch "alol refused this" in one place."""

from __future__ import annotations


class AlolError(RuntimeError):
    """A problem alol detected and can explain; the message says what is wrong and what to do."""


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

    def at(self, file: str, line: int | None) -> DataError:
        return DataError(self.message, file=file, line=line, field=self.field)
