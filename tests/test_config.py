"""Every setting is typed and range-checked before any stage runs, from YAML and from flags."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from alol.cli import load_config, main
from alol.config import PipelineConfig
from alol.setting_checks import ConfigError, flag

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


def test_an_objective_listed_twice_is_refused_naming_it(tmp_path, capsys):
    with pytest.raises(
        ConfigError,
        match=r"setting 'objectives' \(--objectives\): expected any of .*, each once, got",
    ):
        PipelineConfig(objectives=["nll", "a_lol", "nll"])
    args = ["train", "--run-dir", str(tmp_path / "run"), "--objectives", "dpo", "dpo"]
    assert main(args) == 2
    assert "each once, got ['dpo', 'dpo']" in capsys.readouterr().err


def test_abbreviated_flags_are_refused_not_guessed(capsys):
    """argparse would take --max-step for --max-steps."""
    with pytest.raises(SystemExit):
        main(["train", "--max-step", "3"])
    assert "unrecognized arguments: --max-step" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Config files and flags: every mistake one line naming the file and line (or the flag)


def refusal(capsys, argv: list[str], command: str = "train") -> str:
    """The one line `alol` prints when it refuses `argv`; no traceback, exit 2."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own refusals
        code = exit_.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"alol {command}: error: "), err
    return lines[0]


def write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max_steps: 3\nlora: [true\n", ":3: YAML syntax error: "),  # before: <unicode string>
        ("max_steps: 3\n1: 2\n", ":2: an option name must be text, got 1"),  # AttributeError
        ("seed: 1\nreward: !!python/object/apply:os.system [echo]\n", ":2: could not determine"),
        ("max_steps: 3\nseed: 1\nmax-steps: 4\n", ":3: 'max_steps' is set twice (first on line 1)"),
        (
            "- max_steps: 3\n",
            ": a config file is a mapping of option: value (one per line); this one holds a list",
        ),
        ("max_steps: 3\nlearning_rate: fast\n", ":2: setting 'learning_rate' (--learning-rate)"),
        ("objectives: [nll, best]\n", ":1: setting 'objectives' (--objectives): expected any of"),
    ],
)
def test_a_config_file_mistake_is_one_line_naming_the_file_and_line(
    tmp_path, capsys, text, expected
):
    path = write(tmp_path, text)

    assert f"{path}{expected}" in refusal(capsys, ["train", str(path)])


def test_training_no_objective_is_refused_while_evaluating_pi_ref_alone_is_a_config(
    tmp_path, capsys
):
    path = write(tmp_path, "objectives: []\n")

    for command in ("train", "run"):
        error = refusal(capsys, [command, str(path)], command)
        assert error.endswith("no objective to train; set 'objectives'"), error
    assert load_config(str(path), {}).objectives == []


def test_a_python_tag_is_refused_as_not_plain_yaml(tmp_path, capsys):
    path = write(tmp_path, "reward: !!python/name:os.system\n")

    assert "plain YAML, without tags such as !!python" in refusal(capsys, ["train", str(path)])


def test_an_unknown_key_suggests_the_setting_and_the_commands_own_help(tmp_path, capsys):
    """Before: `alol train` pointed to `alol run --help` and guessed nothing."""
    path = write(tmp_path, "seed: 1\nmax_step: 3\n")

    error = refusal(capsys, ["train", str(path)])

    assert f"{path}:2: unknown option 'max_step' (did you mean 'max_steps'?)" in error
    assert "`alol train --help` lists this command's options" in error


def test_a_flag_spelled_as_its_yaml_key_gets_the_dashed_flag(capsys):
    """Before: "unrecognized arguments: --max_steps", nothing more."""
    error = refusal(capsys, ["train", "--max_steps", "3", "--seed", "1"])

    assert "unrecognized arguments: --max_steps" in error and "did you mean --max-steps?" in error


def test_a_config_file_that_cannot_be_read_is_one_line(tmp_path, capsys):
    assert f"no config file {tmp_path / 'nope.yaml'}" in refusal(
        capsys, ["train", str(tmp_path / "nope.yaml")]
    )
    assert "cannot read the config file" in refusal(capsys, ["train", str(tmp_path)])
    assert "cannot read the config file" in refusal(capsys, ["train", "--bf16", "a\x00b"])


def test_arguments_are_checked_before_torch_and_transformers_load():
    """Before: 6-7 s (more on a busy machine) of imports preceded every error."""
    check = (
        "import sys; from alol.cli import main; code = main(['train', '--max-steps', 'abc']); "
        "print(code, sorted({'torch', 'transformers'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)

    assert done.stdout.split("\n")[0] == "2 []", done.stdout + done.stderr
    assert "setting 'max_steps' (--max-steps): expected an integer" in done.stderr


# --- fuzz: any bad config or flag is exit 2, one line, no traceback, before any stage -------

FIELDS = dataclasses.fields(PipelineConfig)
SETTING_NAMES = [f.name for f in FIELDS]
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2)
    ),
    max_leaves=4,
)
BROKEN_LINES = [
    "lora: [true",
    "seed: {1: 2",
    "  indented: 1",
    "\tseed: 1",
    "seed: 'open",
    "seed: 1: 2",
    "reward: !!python/object/apply:os.system [echo]",
    "reward: !!python/name:os.system",
    "reward: !custom 3",
    "? [a, b]\n: 1",
    "1: 2",
    "null: 2",
    "true: 2",
    "seed: 1\nseed: 2",
    "- 1",
    "seed: *undefined",
]


def is_refused(values: dict) -> bool:
    try:
        PipelineConfig(**values)
    except Exception:
        return True
    return False


@st.composite
def bad_configs(draw) -> str:
    """A YAML text with one mistake in it: a value of the wrong type or out of range, an
    unknown or non-text or repeated key, a tag, a syntax error, or not a mapping at all."""
    base = {"seed": draw(st.integers(0, 9)), "max_steps": draw(st.integers(1, 9))}
    kind = draw(st.sampled_from(["value", "unknown key", "broken line", "document"]))
    if kind == "value":
        name = draw(st.sampled_from(SETTING_NAMES))
        value = draw(VALUES)
        assume(is_refused({name: value}))
        return yaml.safe_dump({**base, name: value})
    if kind == "unknown key":
        key = draw(st.from_regex(r"[a-z][a-z_-]{0,12}", fullmatch=True))
        assume(key.replace("-", "_") not in {*SETTING_NAMES, "objective", "judge"})
        return yaml.safe_dump({**base, key: draw(VALUES)})
    if kind == "broken line":
        lines = yaml.safe_dump(base).splitlines()
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(BROKEN_LINES)))
        return "\n".join(lines) + "\n"
    return yaml.safe_dump(
        draw(
            st.lists(VALUES, min_size=1, max_size=3)
            | VALUES.filter(lambda v: v is not None and not isinstance(v, dict))
        )
    )


FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(text=bad_configs(), command=st.sampled_from(["train", "run", "sft", "eval"]))
def test_any_bad_config_file_is_exit_2_and_one_line_naming_it(
    tmp_path, capsys, monkeypatch, text, command
):
    monkeypatch.setattr("alol.cli._run", lambda *_: pytest.fail("a stage ran on a bad config"))
    path = write(tmp_path, text)

    assert str(path) in refusal(capsys, [command, str(path)], command)


@st.composite
def bad_flags(draw) -> list[str]:
    """A flag of `alol train` with a value it refuses, or a flag it does not have."""
    flags = {flag(f.name): f.name for f in FIELDS if "train" in f.metadata["stages"]}
    if draw(st.booleans()):
        name = draw(st.sampled_from(sorted(flags)))
        value = draw(st.text(st.characters(blacklist_categories=("Cs",)), max_size=8))
        assume(is_refused({flags[name]: value}))
        return [name, value]
    unknown = "--" + draw(st.from_regex(r"[a-z][a-z_-]{0,12}", fullmatch=True))
    assume(unknown not in flags and unknown not in ("--objective", "--method", "--judge"))
    return [unknown, "1"]


@FUZZ
@given(argv=bad_flags())
def test_any_bad_flag_is_exit_2_and_one_line(capsys, monkeypatch, argv):
    monkeypatch.setattr("alol.cli._run", lambda *_: pytest.fail("a stage ran on a bad flag"))

    refusal(capsys, ["train", *argv, "--run-dir", "runs/never"])
