"""What a user of the `alol` command sees: alol's own lines, warnings from anyone, and one
progress bar at a time; the libraries' chatter (weight-loading bars, per-file notices) is
silenced. Every figure a stage computes is also written to its folder."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path


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
        warnings.simplefilter("once")
        # Deprecations speak to the developers of the code that calls the API, not to its
        # users; Python's own default filters hide them outside __main__ too.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
    warnings.showwarning = _show_once
    _quiet_libraries()


_shown: set[tuple[type, str]] = set()


def _show_once(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning once per run, in the console's form. The "once" filter alone is not enough:
    each `warnings.catch_warnings` block (Trainer enters several per stage) resets the record
    of what was shown, so a library warning came back once per stage."""
    key = (category, str(message))
    if key not in _shown:
        _shown.add(key)
        _warnings.warning("%s (%s): %s", category.__name__, _source(filename), message)


_warnings = logging.getLogger("alol.warnings")
"""Warnings go out through an alol logger: the libraries' own loggers are quietened (or, as
torch's, print in their own format)."""


def _source(filename: str) -> str:
    """The package that warned ('transformers'), else the file's name."""
    parts = Path(filename).parts
    if "site-packages" in parts[:-1]:
        return parts[parts.index("site-packages") + 1]
    return Path(filename).stem


OFFLINE_CHATTER = ("bitsandbytes.backends.cpu.ops",)
"""Loggers whose warnings say only that something could not be fetched from the hub, which
alol never reaches: bitsandbytes' CPU backend announces at import (peft imports it, so on every
command, quantizing or not) that its optional kernels were not downloaded."""


def _quiet_libraries() -> None:
    for name in OFFLINE_CHATTER:
        logging.getLogger(name).setLevel(logging.ERROR)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        from huggingface_hub.utils import disable_progress_bars
    except ImportError:  # older huggingface_hub: its bars stay
        return
    disable_progress_bars()
