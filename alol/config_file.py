"""YAML config files: read as plain data, and every problem named by file and line.

PyYAML alone names a syntax error's file `<unicode string>`, refuses a `!!python/...` tag with
a traceback, keeps the last of two equal keys without a word and hands over keys of any type;
here each of those is one `ConfigError` that says where and what to change. A bad value is
refused by `PipelineConfig` (`alol.setting_checks`); its message gets the line of its key.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any

import yaml

from alol.config import PipelineConfig
from alol.setting_checks import ConfigError

ALIASES = {
    alias.removeprefix("--").replace("-", "_"): setting.name
    for setting in dataclasses.fields(PipelineConfig)
    for alias in setting.metadata["aliases"]
}
"""YAML keys that name a setting by another name, as its other flags do (`objective`,
`warmup_ratio`, ...)."""

STR_TAG = "tag:yaml.org,2002:str"

_KINDS = {list: "a list", str: "text", int: "a number", float: "a number", bool: "a boolean"}


def load_config(
    path: str | None, overrides: dict[str, Any], command: str = "run"
) -> PipelineConfig:
    """YAML values, then command-line flags (`overrides`); an unknown key is an error naming
    its line, the setting it was likely meant to be, and where the settings are listed."""
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    if path is not None:
        values, lines = read_config_file(Path(path))
    unknown = [key for key in values if key not in _SETTINGS]
    if unknown:
        raise ConfigError(_unknown_message(path, unknown, lines, command))
    values.update(overrides)
    try:
        return PipelineConfig(**values)
    except ConfigError as error:
        if error.setting in lines and error.setting not in overrides:
            raise ConfigError(f"{path}:{lines[error.setting]}: {error}", error.setting) from None
        raise


_SETTINGS = [f.name for f in dataclasses.fields(PipelineConfig)]


def read_config_file(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The file's settings (keys spelled as settings: `max-steps` and aliases become
    `max_steps`, `objectives`) and the line of each key."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no config file {path}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a text file (byte {error.start} is not UTF-8)") from None
    except (OSError, ValueError) as error:  # a folder, no permission, a NUL in the name
        raise ConfigError(f"cannot read the config file {str(path)!r}: {error}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(_yaml_message(path, error)) from None
    if loaded is None:
        return {}, {}
    if not isinstance(loaded, dict) or not isinstance(node, yaml.MappingNode):
        raise ConfigError(
            f"{path}: a config file is a mapping of option: value (one per line); this one "
            f"holds {_KINDS.get(type(loaded), 'a value')} ({str(loaded)[:40]})"
        )
    lines = _setting_lines(path, node)
    return {_setting(key): value for key, value in loaded.items()}, lines


def _setting_lines(path: Path, node: yaml.MappingNode) -> dict[str, int]:
    """The 1-based line of each setting; a key that is not text, or a setting set twice (which
    PyYAML would settle silently by keeping the last), is refused."""
    lines: dict[str, int] = {}
    for key_node, _ in node.value:
        line = key_node.start_mark.line + 1
        if not (isinstance(key_node, yaml.ScalarNode) and key_node.tag == STR_TAG):
            shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "a collection"
            raise ConfigError(f"{path}:{line}: an option name must be text, got {shown}")
        setting = _setting(key_node.value)
        if setting in lines:
            raise ConfigError(
                f"{path}:{line}: {setting!r} is set twice (first on line {lines[setting]})"
            )
        lines[setting] = line
    return lines


def _setting(key: str) -> str:
    name = key.replace("-", "_")
    return ALIASES.get(name, name)


def _yaml_message(path: Path, error: yaml.YAMLError) -> str:
    if not isinstance(error, yaml.MarkedYAMLError) or error.problem_mark is None:
        return f"{path}: not valid YAML ({' '.join(str(error).split())})"
    where = f"{path}:{error.problem_mark.line + 1}"
    problem = error.problem or "invalid YAML"
    if isinstance(error, yaml.constructor.ConstructorError) and "tag" in problem:
        return f"{where}: {problem}; config files are plain YAML, without tags such as !!python"
    context = f" {error.context}" if error.context else ""
    mark = error.context_mark
    if context and mark is not None and mark.line != error.problem_mark.line:
        context += f" that starts on line {mark.line + 1}"
    return f"{where}: YAML syntax error: {problem}{context}"


def _unknown_message(path: str | None, unknown: list[str], lines: dict[str, int], command: str):
    key = unknown[0]
    close = difflib.get_close_matches(key, _SETTINGS, n=1)
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    more = f", and {len(unknown) - 1} more ({', '.join(unknown[1:])})" if len(unknown) > 1 else ""
    listed = "`alol run --help` lists every option"
    if command != "run":
        listed = f"`alol {command} --help` lists this command's options, {listed}"
    return f"{path}:{lines[key]}: unknown option {key!r}{guess}{more}; {listed}"
