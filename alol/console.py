"""What a user of the `alol` command sees: alol's own lines, warnings from anyone, and one
progress bar at a time; the libraries' chatter (weight-loading bars, per-file notices) is
silenced. Every figure a stage computes is also written to its folder."""

from __future__ import annotations

import logging
import sys
import warnings


class _ConsoleFormat(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            source = "" if record.name.startswith("alol") else f" ({record.name})"
            return f"warning{source}: {message}"
        return message


class _AlolOrWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.startswith("alol") or record.levelno >= logging.WARNING


def configure_console() -> None:
    """Call once, from the command line's entry point."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ConsoleFormat())
    handler.addFilter(_AlolOrWarnings())
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_alol_console", False)]:
        root.removeHandler(old)
    handler._alol_console = True
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    if not any(flt[0] == "once" and flt[2] is Warning for flt in warnings.filters):
        warnings.simplefilter("once")  # a library warning once per run, not once per stage
    _quiet_libraries()


def _quiet_libraries() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        from huggingface_hub.utils import disable_progress_bars
    except ImportError:  # older huggingface_hub: its bars stay
        return
    disable_progress_bars()
