"""The root of alol's own errors, so a CLI or a caller can catch "alol refused this" in one place."""

from __future__ import annotations


class AlolError(RuntimeError):
    """A problem alol detected and can explain; the message says what is wrong and what to do."""
