"""The value stage refuses data that cannot fit V, and says what to change."""

from __future__ import annotations

import pytest

from alol.errors import AlolError
from alol.pipeline.value_stage import refuse_mostly_empty_samples


def test_mostly_empty_reference_answers_are_refused_with_what_to_change():
    prompts = [f"<|user|>What is {i} plus 32?<|assistant|>" for i in range(4)]
    with pytest.raises(
        AlolError, match=r"answered 3 of 4 validation prompts with an empty"
    ) as error:
        refuse_mostly_empty_samples(prompts, ["", " ", "\n", "116"], "validation")
    assert "chat template" in str(error.value) and "What is 0 plus 32" in str(error.value)


def test_some_empty_answers_are_kept():
    refuse_mostly_empty_samples(["a", "b", "c", "d"], ["", "", "yes", "no"], "training")
