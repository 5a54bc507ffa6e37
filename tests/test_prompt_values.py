"""Per-prompt values (`value_estimate: per_prompt`): each training prompt's mean reward of
π_ref's own answers, saved with the model that answered and looked up by rendered prompt."""

from __future__ import annotations

import pytest

from alol.errors import AlolError
from alol.models.prompt_values import (
    VALUES_FILE,
    load_prompt_values,
    mean_per_prompt,
    prompt_values_model,
    save_prompt_values,
    values_of,
)


def test_each_prompt_is_worth_the_mean_reward_of_its_answers():
    prompts = ["<u>tea?", "<u>tea?", "<u>rain?", "<u>tea?"]
    assert mean_per_prompt(prompts, [0.2, 0.4, 1.0, 0.9]) == pytest.approx(
        {"<u>tea?": 0.5, "<u>rain?": 1.0}
    )


def test_values_come_back_with_the_model_that_answered(tmp_path):
    model = {"path": "sft/model", "fingerprint": "abc"}
    save_prompt_values(tmp_path, {"<u>tea?": 0.5}, model, {"n_prompts": 1})
    assert load_prompt_values(tmp_path) == {"<u>tea?": 0.5}
    assert prompt_values_model(tmp_path) == model
    assert prompt_values_model(tmp_path / "elsewhere") is None


def test_a_training_prompt_without_a_value_is_refused_where_it_stands():
    with pytest.raises(AlolError, match=r"\(train.jsonl:2\) has no per-prompt value") as error:
        values_of(["<u>tea?", "<u>snow?"], {"<u>tea?": 0.5}, ["train.jsonl:1", "train.jsonl:2"])
    assert "snow" in str(error.value) and "alol value" in str(error.value)


def test_values_are_read_in_the_records_order():
    values = {"<u>tea?": 0.5, "<u>rain?": 1.0}
    assert values_of(["<u>rain?", "<u>tea?", "<u>rain?"], values, ["", "", ""]) == [1.0, 0.5, 1.0]


@pytest.mark.parametrize(
    "text", ["{torn", '{"values": {"<u>tea?": "high"}}', '{"values": {"<u>tea?": true}}', "[1, 2]"]
)
def test_a_damaged_values_file_says_how_to_make_it_again(tmp_path, text):
    (tmp_path / VALUES_FILE).write_text(text)
    with pytest.raises(AlolError, match="rerun `alol value`"):
        load_prompt_values(tmp_path)
