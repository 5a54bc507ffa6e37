"""Every setting is typed and range-checked before any stage runs, from YAML and from flags."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from alol.cli import load_config, main
from alol.config import PipelineConfig
from alol.setting_checks import ConfigError

UNCHECKED_NUMBERS = {"seed", "kto_threshold"}  # any integer seeds; a reward threshold is any number


def numeric(annotation) -> bool:
    members = typing.get_args(annotation) or (annotation,)
    return any(member in (int, float) for member in members)


def test_every_numeric_setting_has_a_checked_range():
    hints = typing.get_type_hints(PipelineConfig)
    unchecked = {
        f.name
        for f in dataclasses.fields(PipelineConfig)
        if numeric(hints[f.name]) and f.metadata.get("check") is None
    }
    assert unchecked == UNCHECKED_NUMBERS


def test_yaml_numbers_written_as_text_get_their_type(tmp_path):
    """PyYAML reads `1e-4` (no dot) as the string '1e-4'."""
    config = tmp_path / "config.yaml"
    config.write_text("learning_rate: 1e-4\nmax_steps: '30'\nlora: true\nclip: none\n")

    cfg = load_config(str(config), {})

    assert cfg.learning_rate == 1e-4 and isinstance(cfg.learning_rate, float)
    assert cfg.max_steps == 30 and cfg.clip is None and cfg.lora is True


@pytest.mark.parametrize(
    ("setting", "value", "expected"),
    [
        ("max_steps", "-5", "expected a number ≥ 1, got -5"),
        ("max_steps", "0", "expected a number ≥ 1, got 0"),
        ("val_fraction", "-0.3", r"expected a number in \[0, 1\), got -0.3"),
        ("val_fraction", "1.5", r"expected a number in \[0, 1\), got 1.5"),
        ("learning_rate", "fast", "expected a number, got 'fast'"),
        ("batch_size", "2.5", "expected an integer, got '2.5'"),
        ("sampling", "priority", "expected one of 'uniform', 'advantage', 'reward'"),
        ("clip", "1.2", r"expected a number in \(0, 1\)"),
        ("value_max", "big", r"expected a number > 0 or one of 'auto', got 'big'"),
    ],
)
def test_a_value_out_of_range_or_of_the_wrong_type_names_the_setting(setting, value, expected):
    with pytest.raises(
        ConfigError, match=rf"setting '{setting}' \(--{setting.replace('_', '-')}\): {expected}"
    ):
        PipelineConfig(**{setting: value})


def test_the_cli_refuses_a_bad_value_before_any_stage_runs(tmp_path, capsys):
    assert main(["train", "--run-dir", str(tmp_path / "run"), "--val-fraction", "1.5"]) == 2
    assert "setting 'val_fraction' (--val-fraction)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_abbreviated_flags_are_refused_not_guessed(capsys):
    """argparse would take --max-step for --max-steps."""
    with pytest.raises(SystemExit):
        main(["train", "--max-step", "3"])
    assert "unrecognized arguments: --max-step" in capsys.readouterr().err
