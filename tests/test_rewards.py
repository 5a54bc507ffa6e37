"""Reward specs, the Reward protocol, scoring, errors and fingerprints (alol.rewards)."""

from __future__ import annotations

import math
import shutil
import sys
import textwrap
import threading

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GPT2Config,
    GPT2ForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
)

from alol.fingerprint import spec_fingerprint
from alol.rewards import RewardError, load_reward, score, with_missing_eos_penalty
from alol.rewards.specs import reward_name

PROMPTS = ["How do I bake bread?", "Say something kind.", "Count to three.", "Hi"]
RESPONSES = ["Mix flour and water.", "You are great!", "1 2 3", "Hello there, friend"]
CONCATENATED = [p + r for p, r in zip(PROMPTS, RESPONSES, strict=True)]

REWARD_SOURCE = """
def chars(prompts, responses):
    return [float(len(r)) for r in responses]

def scaled_chars(prompts, responses, scale=1.0):
    return [scale * len(r) for r in responses]

def parts(prompts, responses):
    return [{"chars": len(r), "words": len(r.split())} for r in responses]
"""


@pytest.fixture
def reward_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(REWARD_SOURCE)
    return path


@pytest.fixture
def reward_module(tmp_path, monkeypatch):
    """A module `alol_test_reward_module` importable from sys.path, forgotten after the test."""
    (tmp_path / "alol_test_reward_module.py").write_text(REWARD_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "alol_test_reward_module"
    sys.modules.pop("alol_test_reward_module", None)


def reward_from_source(tmp_path, source: str, function: str = "reward", **options):
    path = tmp_path / f"{function}_source.py"
    path.write_text(textwrap.dedent(source))
    return load_reward({"type": "callable", "path": f"{path}:{function}", **options})


# --- callables -----------------------------------------------------------------------------------


def test_module_function_spec_scores_every_record(reward_module):
    reward = load_reward(f"{reward_module}:chars")
    scores = score(reward, PROMPTS, RESPONSES, show_progress=False)
    assert reward.components == ("chars",)
    assert scores == [{"chars": float(len(r)), "total": float(len(r))} for r in RESPONSES]


def test_file_function_spec_scores_every_record(reward_file):
    scores = score(load_reward(f"{reward_file}:chars"), PROMPTS, RESPONSES, show_progress=False)
    assert [s["total"] for s in scores] == [float(len(r)) for r in RESPONSES]


def test_callable_dict_spec_passes_kwargs_and_renames(reward_file):
    reward = load_reward(
        {
            "type": "callable",
            "path": f"{reward_file}:scaled_chars",
            "name": "half",
            "kwargs": {"scale": 0.5},
        }
    )
    scores = score(reward, PROMPTS, RESPONSES, show_progress=False)
    assert reward.components == ("half",)
    assert [s["half"] for s in scores] == [0.5 * len(r) for r in RESPONSES]


def test_function_returning_dicts_contributes_each_key_and_total_is_their_sum(reward_file):
    """'You are great!' has 14 characters and 3 words: total 14 + 3 = 17."""
    reward = load_reward(f"{reward_file}:parts")
    scores = score(reward, PROMPTS, RESPONSES, show_progress=False)
    assert reward.components == ("chars", "words")
    assert scores[1] == {"chars": 14.0, "words": 3.0, "total": 17.0}


def test_components_of_a_dict_function_are_unknown_before_its_first_call(reward_file):
    reward = load_reward(f"{reward_file}:parts")
    with pytest.raises(RewardError, match="known only after its first call"):
        _ = reward.components


def test_numpy_and_tensor_outputs_are_accepted(tmp_path):
    reward = reward_from_source(
        tmp_path,
        """
        import torch
        def reward(prompts, responses):
            return torch.arange(len(responses), dtype=torch.float32)
        """,
    )
    scores = score(reward, PROMPTS, RESPONSES, show_progress=False)
    assert [s["total"] for s in scores] == [0.0, 1.0, 2.0, 3.0]


def test_scores_do_not_depend_on_batch_size(reward_file):
    reward = load_reward(f"{reward_file}:parts")
    one_at_a_time = score(reward, PROMPTS, RESPONSES, batch_size=1, show_progress=False)
    all_at_once = score(reward, PROMPTS, RESPONSES, batch_size=len(PROMPTS), show_progress=False)
    assert one_at_a_time == all_at_once


def test_scoring_nothing_returns_nothing(reward_file):
    assert score(load_reward(f"{reward_file}:chars"), [], [], show_progress=False) == []


# --- built-in scorers by name -------------------------------------------------------------------


def test_builtin_scorer_by_name_and_as_dict_with_options():
    """length with target_words=2: 'Mix flour and water.' (4 words) → 1; 'Yes' (1 word) → 1/2."""
    by_name = load_reward("length")
    assert by_name.components == ("length",)
    configured = load_reward({"type": "length", "target_words": 2, "name": "short"})
    scores = score(
        configured, PROMPTS[:3], ["Mix flour and water.", "Yes", "1 2 3"], show_progress=False
    )
    assert configured.components == ("short",)
    assert [s["short"] for s in scores] == [1.0, 0.5, 1.0]


def test_a_specs_name_is_known_without_loading_and_is_the_built_rewards_name(reward_file, tmp_path):
    missing_weights = tmp_path / "my_classifier"
    specs = {
        "length": "length",
        "short": {"type": "length", "name": "short"},
        "chars": f"{reward_file}:chars",
        "scaled": {"type": "callable", "path": f"{reward_file}:scaled_chars", "name": "scaled"},
        "sum": [f"{reward_file}:chars", "length"],
    }
    for name, spec in specs.items():
        assert reward_name(spec) == name == load_reward(spec).name
    assert reward_name({"type": "classifier", "path": str(missing_weights)}) == "my_classifier"


def test_a_callables_name_is_read_from_its_reference_so_its_file_is_imported_once(tmp_path):
    """A judge's name is needed before it is loaded; reading it must not run the file's code."""
    imports = tmp_path / "imports.txt"
    source = f"""
        from pathlib import Path
        with Path({str(imports)!r}).open("a") as log:
            log.write("imported\\n")
        def helpful(prompts, responses):
            return [1.0 for _ in responses]
        """
    path = tmp_path / "counted.py"
    path.write_text(textwrap.dedent(source))
    spec = f"{path}:helpful"
    assert reward_name(spec) == "helpful"
    assert not imports.exists()
    assert load_reward(spec).name == "helpful"
    assert imports.read_text().splitlines() == ["imported"]


# --- weighted sums -------------------------------------------------------------------------------


def test_weighted_sum_keeps_named_components_and_weights_the_total(reward_file):
    """'1 2 3': chars 5, words 3, length(target 10) 3/10 = 0.3.
    total = 0.5 * (5 + 3) + 2 * 0.3 = 4.6."""
    reward = load_reward(
        {
            "type": "sum",
            "components": [
                {"spec": f"{reward_file}:parts", "weight": 0.5},
                {"spec": {"type": "length", "target_words": 10}, "weight": 2.0, "name": "len"},
            ],
        }
    )
    [result] = score(reward, ["Count."], ["1 2 3"], show_progress=False)
    assert reward.components == ("chars", "words", "len")
    assert reward.weights == {"chars": 0.5, "words": 0.5, "len": 2.0}
    torch.testing.assert_close(result, {"chars": 5.0, "words": 3.0, "len": 0.3, "total": 4.6})


def test_plain_list_is_a_sum_with_unit_weights(reward_file):
    """'You are great!': chars 14, length(target 20) 3/20 = 0.15; total 14.15."""
    reward = load_reward([f"{reward_file}:chars", "length"])
    scores = score(reward, PROMPTS, RESPONSES, show_progress=False)
    assert reward.components == ("chars", "length")
    torch.testing.assert_close(scores[1], {"chars": 14.0, "length": 0.15, "total": 14.15})


def test_nested_sum_multiplies_weights(reward_file):
    """inner = 2 * chars; outer = 3 * inner, so chars weighs 6: 'Hi there' (8 chars) → 48."""
    inner = {
        "type": "sum",
        "name": "inner",
        "components": [{"spec": f"{reward_file}:chars", "weight": 2}],
    }
    reward = load_reward({"type": "sum", "components": [{"spec": inner, "weight": 3}]})
    [result] = score(reward, ["p"], ["Hi there"], show_progress=False)
    assert result == {"chars": 8.0, "total": 48.0}


def test_shared_dict_keys_are_prefixed_by_their_terms_name(reward_file):
    """Two dict terms both give 'chars' and 'words'; each key is prefixed by its term's name."""
    reward = load_reward(
        [
            {"spec": f"{reward_file}:parts", "name": "a"},
            {"spec": f"{reward_file}:parts", "name": "b"},
        ]
    )
    score(reward, PROMPTS, RESPONSES, show_progress=False)
    assert reward.components == ("a/chars", "a/words", "b/chars", "b/words")


def test_a_terms_own_name_wins_over_a_dict_key_it_shares(reward_file):
    reward = load_reward([f"{reward_file}:chars", f"{reward_file}:parts"])
    score(reward, PROMPTS, RESPONSES, show_progress=False)
    assert reward.components == ("chars", "parts/chars", "words")


def test_sum_rejects_two_terms_with_the_same_name(reward_file):
    with pytest.raises(ValueError, match="more than one component is named \\['chars'\\]"):
        load_reward([f"{reward_file}:chars", f"{reward_file}:chars"])


def test_sum_names_the_term_that_raised(tmp_path, reward_file):
    broken = tmp_path / "broken.py"
    broken.write_text("def reward(prompts, responses):\n    raise KeyError('lost')\n")
    reward = load_reward([f"{reward_file}:chars", f"{broken}:reward"])
    with pytest.raises(RewardError, match="component 'reward' raised KeyError"):
        score(reward, PROMPTS, RESPONSES, show_progress=False)


# --- gated terms ---------------------------------------------------------------------------------

GATE_SOURCE = """
def asks(prompts, responses):
    return [1.0 if p.endswith("?") else 0.25 for p in prompts]

def too_big(prompts, responses):
    return [1.5 for _ in prompts]
"""


@pytest.fixture
def gate_file(tmp_path):
    path = tmp_path / "gates.py"
    path.write_text(GATE_SOURCE)
    return path


def test_a_gated_term_counts_in_proportion_to_its_gate_which_is_reported_at_weight_zero(
    reward_file, gate_file
):
    """'How do I bake bread?' asks (gate 1): chars 20 count whole; 'Hi' does not (gate 0.25):
    the 19 chars of 'Hello there, friend' count a quarter, 4.75; the sum adds words."""
    gated = {"type": "gated", "term": f"{reward_file}:chars", "gate": f"{gate_file}:asks"}
    reward = load_reward([{"spec": gated, "name": "chars_on_questions", "weight": 2.0}, "length"])
    scores = score(reward, PROMPTS, RESPONSES, show_progress=False)
    assert reward.components == ("chars", "asks", "length")
    assert reward.weights == {"chars": 2.0, "asks": 0.0, "length": 1.0}
    assert scores[0]["asks"] == 1.0 and scores[0]["chars"] == 20.0
    assert scores[3]["asks"] == 0.25 and scores[3]["chars"] == 4.75
    assert scores[3]["total"] == pytest.approx(2 * 4.75 + scores[3]["length"])


def test_a_gate_is_its_weighted_total_and_a_sum_inside_the_term_keeps_its_weights(
    reward_file, gate_file
):
    """Gate: 0.5 × asks + 0.5 × asks = asks. Term: 2 × chars + words of 'parts', names shared
    between the two terms prefixed. 'Hi' (gate 0.25), 'Hello there, friend': 19 chars, 3 words."""
    gate = [{"spec": f"{gate_file}:asks", "weight": 0.5, "name": "a"},
            {"spec": f"{gate_file}:asks", "weight": 0.5, "name": "b"}]  # fmt: skip
    term = [{"spec": f"{reward_file}:chars", "weight": 2.0}, f"{reward_file}:parts"]
    reward = load_reward({"type": "gated", "term": term, "gate": gate, "name": "g"})
    [last] = score(reward, PROMPTS[3:], RESPONSES[3:], show_progress=False)
    assert reward.weights == {"chars": 2.0, "parts/chars": 1.0, "words": 1.0, "sum": 0.0}
    assert last["sum"] == 0.25
    assert last["chars"] == last["parts/chars"] == 19 * 0.25 and last["words"] == 3 * 0.25
    assert last["total"] == pytest.approx(0.25 * (2 * 19 + 19 + 3))


def test_an_inner_gate_stays_its_probability_when_an_outer_gate_scales_its_term(
    reward_file, gate_file
):
    inner = {"type": "gated", "term": f"{reward_file}:chars", "gate": f"{gate_file}:asks"}
    outer = {"type": "gated", "term": inner, "gate": {"type": "length", "target_words": 4}}
    [hi] = score(load_reward(outer), PROMPTS[3:], RESPONSES[3:], show_progress=False)
    assert hi["asks"] == 0.25, "a report, not scaled by the outer gate"
    assert hi["chars"] == pytest.approx(19 * 0.25 * hi["length"])


def test_the_components_of_a_gated_function_are_known_from_its_first_call(reward_file, gate_file):
    reward = load_reward(
        {"type": "gated", "term": f"{reward_file}:parts", "gate": f"{gate_file}:asks"}
    )
    with pytest.raises(RewardError, match="known only after its first call"):
        _ = reward.components
    score(reward, PROMPTS, RESPONSES, show_progress=False)
    assert reward.components == ("chars", "words", "asks")


def test_a_gate_past_one_by_rounding_alone_is_taken_as_one(reward_file, tmp_path):
    gates = tmp_path / "rounded.py"
    gates.write_text("def gate(prompts, responses):\n    return [1.0 + 2e-16 for _ in prompts]\n")
    reward = load_reward({"type": "gated", "term": f"{reward_file}:chars", "gate": f"{gates}:gate"})
    assert score(reward, ["p"], ["abc"], show_progress=False)[0]["gate"] == 1.0


def test_a_gate_outside_zero_to_one_is_refused_naming_the_gate(reward_file, gate_file):
    reward = load_reward(
        {"type": "gated", "term": f"{reward_file}:chars", "gate": f"{gate_file}:too_big"}
    )
    with pytest.raises(RewardError, match="the gate 'too_big' .* gave 1.5 .* in \\[0, 1\\]"):
        score(reward, PROMPTS, RESPONSES, show_progress=False)


def test_a_gate_named_as_a_component_of_its_term_is_refused(reward_file):
    reward = load_reward(
        {
            "type": "gated",
            "term": f"{reward_file}:chars",
            "gate": {"type": "length", "name": "chars"},
        }
    )
    with pytest.raises(RewardError, match="give the gate another 'name'"):
        score(reward, PROMPTS, RESPONSES, show_progress=False)


def test_a_gated_spec_without_its_term_or_gate_says_what_to_write(reward_file):
    with pytest.raises(ValueError, match="a gated reward needs 'gate'"):
        load_reward({"type": "gated", "term": f"{reward_file}:chars"})
    with pytest.raises(ValueError, match="a gated reward needs 'term'"):
        load_reward({"type": "gated", "term": None, "gate": "length"})  # `term:` left empty
    with pytest.raises(ValueError, match="has no option \\['weight'\\]"):
        load_reward({"type": "gated", "term": "length", "gate": "length", "weight": 2})


def test_a_gated_rewards_fingerprint_follows_its_gates_file(reward_file, gate_file):
    spec = {"type": "gated", "term": f"{reward_file}:chars", "gate": f"{gate_file}:asks"}
    before = spec_fingerprint(spec)
    gate_file.write_text(GATE_SOURCE.replace("0.25", "0.5"))
    assert spec_fingerprint(spec) != before


# --- classifiers ---------------------------------------------------------------------------------


def build_classifier(tokenizer, architecture: str, num_labels: int, pad_in_config: bool = True):
    torch.manual_seed(0)
    labels = {"id2label": {i: f"label{i}" for i in range(num_labels)}, "num_labels": num_labels}
    pad = {"pad_token_id": tokenizer.pad_token_id if pad_in_config else None}
    if architecture == "gpt2":
        config = GPT2Config(
            vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, **labels, **pad
        )
        return GPT2ForSequenceClassification(config)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        **labels,
        **pad,
    )
    return LlamaForSequenceClassification(config)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def classifier_dir(request, tmp_path_factory, tiny_tokenizer_dir):
    """A 3-label classifier (label0, label1, label2) saved with the tiny tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    directory = tmp_path_factory.mktemp(f"classifier-{request.param}")
    build_classifier(tokenizer, request.param, num_labels=3).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def unpadded_logits(directory, texts: list[str]) -> torch.Tensor:
    """Logits of each text scored alone (no padding), straight from transformers."""
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    with torch.no_grad():
        return torch.cat([model(**tokenizer(t, return_tensors="pt")).logits for t in texts])


def classifier_scores(spec) -> torch.Tensor:
    reward = load_reward(spec)
    scores = score(reward, PROMPTS, RESPONSES, show_progress=False)
    return torch.tensor([s["total"] for s in scores])


def test_an_answer_cut_at_the_budget_pays_the_missing_eos_penalty_as_a_component():
    scores = [{"kind": 0.6, "total": 0.6}, {"kind": 0.9, "total": 0.9}]

    penalized = with_missing_eos_penalty(scores, finished=[True, False], penalty=0.5)

    assert penalized[0] == {"kind": 0.6, "missing_eos": 0.0, "total": 0.6}
    assert penalized[1] == {"kind": 0.9, "missing_eos": -0.5, "total": pytest.approx(0.4)}
    assert with_missing_eos_penalty(scores, [True, False], None) == scores
    with pytest.raises(RewardError, match="a component named 'missing_eos'"):
        with_missing_eos_penalty([{"missing_eos": 1.0, "total": 1.0}], [True], 0.5)


def test_classifier_default_is_sigmoid_of_the_last_logit(classifier_dir):
    """Batched and padded scoring equals sigmoid(logit[2]) of each prompt + response alone."""
    logits = unpadded_logits(classifier_dir, CONCATENATED)
    reward = load_reward({"type": "classifier", "path": str(classifier_dir), "name": "rm"})
    scores = score(reward, PROMPTS, RESPONSES, show_progress=False)
    assert reward.components == ("rm",)
    torch.testing.assert_close(torch.tensor([s["rm"] for s in scores]), logits[:, 2].sigmoid())


def test_classifier_softmax_of_a_label_chosen_by_name_or_index(classifier_dir):
    logits = unpadded_logits(classifier_dir, CONCATENATED)
    expected = logits.softmax(-1)[:, 1]
    for label in ("label1", 1):
        spec = {
            "type": "classifier",
            "path": str(classifier_dir),
            "label": label,
            "activation": "softmax",
        }
        torch.testing.assert_close(classifier_scores(spec), expected)


def test_classifier_without_activation_returns_the_raw_logit(classifier_dir):
    logits = unpadded_logits(classifier_dir, CONCATENATED)
    spec = {"type": "classifier", "path": str(classifier_dir), "label": 0, "activation": "none"}
    torch.testing.assert_close(classifier_scores(spec), logits[:, 0])


def test_classifier_can_read_the_response_alone(classifier_dir):
    logits = unpadded_logits(classifier_dir, RESPONSES)
    spec = {"type": "classifier", "path": str(classifier_dir), "inputs": "response"}
    torch.testing.assert_close(classifier_scores(spec), logits[:, 2].sigmoid())


def test_classifier_can_read_the_prompt_alone(classifier_dir):
    logits = unpadded_logits(classifier_dir, PROMPTS)
    spec = {"type": "classifier", "path": str(classifier_dir), "inputs": "prompt"}
    torch.testing.assert_close(classifier_scores(spec), logits[:, 2].sigmoid())


@pytest.mark.parametrize(
    ("inputs", "distinct"), [("prompt", 2), ("response", 3), ("pair", 4), ("concat", 4)]
)
def test_classifier_scores_each_distinct_input_once(classifier_dir, inputs, distinct):
    """A gate reads the prompt alone: its two answers to one prompt cost one forward row, and
    a constant answer given to every prompt costs one row for a classifier of the response."""
    reward = load_reward({"type": "classifier", "path": str(classifier_dir), "inputs": inputs})
    rows = []
    forward = reward.model.forward
    reward.model.forward = lambda **batch: rows.append(len(batch["input_ids"])) or forward(**batch)
    prompts = ["Is tea hot?", "Is tea hot?", "Is rain wet?", "Is rain wet?"]
    responses = ["Yes.", "No.", "Yes.", "Maybe."]
    scores = [s["total"] for s in score(reward, prompts, responses, show_progress=False)]
    assert sum(rows) == distinct
    alone = [s["total"] for s in score(reward, prompts[2:], responses[2:], show_progress=False)]
    assert scores[2:] == pytest.approx(alone, abs=1e-6)
    if inputs == "prompt":
        assert scores[0] == scores[1] and scores[2] == scores[3]


def test_classifier_reads_a_text_pair_as_the_tokenizer_encodes_it(classifier_dir):
    tokenizer = AutoTokenizer.from_pretrained(classifier_dir)
    model = AutoModelForSequenceClassification.from_pretrained(classifier_dir).eval()
    with torch.no_grad():
        logits = torch.cat(
            [
                model(**tokenizer(p, r, return_tensors="pt")).logits
                for p, r in zip(PROMPTS, RESPONSES, strict=True)
            ]
        )
    spec = {"type": "classifier", "path": str(classifier_dir), "inputs": "pair", "batch_size": 3}
    torch.testing.assert_close(classifier_scores(spec), logits[:, 2].sigmoid())


def test_classifier_without_pad_id_in_its_config_takes_the_tokenizers(tmp_path, tiny_tokenizer):
    build_classifier(tiny_tokenizer, "gpt2", num_labels=1, pad_in_config=False).save_pretrained(
        tmp_path
    )
    tiny_tokenizer.save_pretrained(tmp_path)
    logits = unpadded_logits(tmp_path, CONCATENATED)
    torch.testing.assert_close(
        classifier_scores({"type": "classifier", "path": str(tmp_path)}), logits[:, 0].sigmoid()
    )


def test_classifier_option_errors_say_what_is_allowed(classifier_dir, tmp_path):
    path = str(classifier_dir)
    with pytest.raises(ValueError, match="no label 'positive'; its labels are"):
        load_reward({"type": "classifier", "path": path, "label": "positive"})
    with pytest.raises(ValueError, match="index in \\[0, 3\\)"):
        load_reward({"type": "classifier", "path": path, "label": 3})
    with pytest.raises(ValueError, match="activation must be one of"):
        load_reward({"type": "classifier", "path": path, "activation": "tanh"})
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_reward({"type": "classifier", "path": str(tmp_path)})


def test_softmax_over_a_single_logit_is_refused(tmp_path, tiny_tokenizer):
    build_classifier(tiny_tokenizer, "gpt2", num_labels=1).save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="softmax over its single logit is always 1"):
        load_reward({"type": "classifier", "path": str(tmp_path), "activation": "softmax"})


# --- scoring errors -------------------------------------------------------------------------------


def test_a_raising_reward_names_batch_records_and_spec_and_chains_the_error(tmp_path):
    reward = reward_from_source(
        tmp_path,
        """
        def reward(prompts, responses):
            if "1 2 3" in responses:
                raise ZeroDivisionError("boom")
            return [1.0] * len(responses)
        """,
        name="fragile",
    )
    with pytest.raises(RewardError) as caught:
        score(reward, PROMPTS, RESPONSES, batch_size=2, show_progress=False)
    message = str(caught.value)
    assert "reward 'fragile' on batch 1 (records 2-3)" in message
    assert "ZeroDivisionError: boom" in message
    assert isinstance(caught.value.__cause__, ZeroDivisionError)


@pytest.mark.parametrize("bad", ["float('nan')", "float('inf')", "'high'", "None"])
def test_a_non_finite_or_non_numeric_value_names_record_and_component(tmp_path, bad):
    reward = reward_from_source(
        tmp_path,
        f"""
        def reward(prompts, responses):
            return [{{"ok": 1.0, "bad": 0.0 if i != 2 else {bad}}} for i in range(len(responses))]
        """,
    )
    with pytest.raises(
        RewardError, match="for component 'bad' of record 2; rewards must be finite"
    ):
        score(reward, PROMPTS, RESPONSES, show_progress=False)


def test_a_wrong_number_of_outputs_names_the_batch(tmp_path):
    reward = reward_from_source(tmp_path, "def reward(prompts, responses):\n    return [1.0]\n")
    with pytest.raises(
        RewardError, match="batch 0 \\(records 0-2\\) returned 1 results for 3 records"
    ):
        score(reward, PROMPTS, RESPONSES, batch_size=3, show_progress=False)


def test_errors_name_records_by_the_numbers_given_for_a_process_share(tmp_path):
    """A process scoring every second record of the whole work names them as the whole does."""
    short = reward_from_source(tmp_path, "def reward(prompts, responses):\n    return [1.0]\n")
    with pytest.raises(RewardError, match="batch 0 \\(records 1, 3, 5\\) returned 1 results"):
        score(
            short,
            PROMPTS[:3],
            RESPONSES[:3],
            batch_size=3,
            show_progress=False,
            record_numbers=[1, 3, 5],
        )
    uneven = reward_from_source(
        tmp_path,
        """
        def reward(prompts, responses):
            return [{"a": 1.0} if i == 0 else {"b": 1.0} for i in range(len(responses))]
        """,
    )
    with pytest.raises(RewardError, match="unexpected components \\['b'\\] for record 3"):
        score(uneven, PROMPTS[:3], RESPONSES[:3], show_progress=False, record_numbers=[1, 3, 5])


def test_a_scalar_output_is_refused(tmp_path):
    reward = reward_from_source(tmp_path, "def reward(prompts, responses):\n    return 1.0\n")
    with pytest.raises(RewardError, match="returned a float; it must return a list"):
        score(reward, PROMPTS, RESPONSES, show_progress=False)


def test_records_must_all_have_the_same_components(tmp_path):
    reward = reward_from_source(
        tmp_path,
        """
        def reward(prompts, responses):
            return [{"a": 1.0} if i == 0 else {"b": 1.0} for i in range(len(responses))]
        """,
    )
    with pytest.raises(RewardError, match="unexpected components \\['b'\\] for record 1"):
        score(reward, PROMPTS, RESPONSES, show_progress=False)


def test_a_component_named_total_is_refused(tmp_path):
    reward = reward_from_source(
        tmp_path, "def reward(prompts, responses):\n    return [{'total': 1.0}] * len(responses)\n"
    )
    with pytest.raises(RewardError, match="component named 'total'"):
        score(reward, PROMPTS, RESPONSES, show_progress=False)


def test_a_batch_exceeding_the_timeout_names_the_batch():
    release = threading.Event()

    class Hanging:
        name = "hanging"
        components = ("hanging",)

        def __call__(self, prompts, responses):
            release.wait(timeout=30)
            return [{"hanging": 0.0} for _ in responses]

    try:
        with pytest.raises(
            RewardError, match="batch 0 \\(records 0-3\\) did not finish within 0.1 s"
        ):
            score(Hanging(), PROMPTS, RESPONSES, timeout=0.1, show_progress=False)
    finally:
        release.set()


def test_a_batch_within_the_timeout_scores_normally(reward_file):
    reward = load_reward(f"{reward_file}:chars")
    assert score(reward, PROMPTS, RESPONSES, timeout=30, show_progress=False) == score(
        reward, PROMPTS, RESPONSES, show_progress=False
    )


# --- spec errors ----------------------------------------------------------------------------------


def test_spec_errors_tell_the_user_what_to_write(tmp_path, reward_file):
    with pytest.raises(ValueError, match="unknown reward 'sentimental': give a built-in scorer"):
        load_reward("sentimental")
    with pytest.raises(ValueError, match="needs a 'type'"):
        load_reward({"path": "x:y"})
    with pytest.raises(ValueError, match="unknown reward type 'regression'"):
        load_reward({"type": "regression"})
    with pytest.raises(ValueError, match="has no option \\['target'\\]"):
        load_reward({"type": "length", "target": 3})
    with pytest.raises(ValueError, match="needs a 'path': 'package.module:function'"):
        load_reward({"type": "callable"})
    with pytest.raises(ValueError, match="has no function named 'missing'"):
        load_reward(f"{reward_file}:missing")
    with pytest.raises(FileNotFoundError, match="reward file .*nowhere.py not found"):
        load_reward(f"{tmp_path}/nowhere.py:reward")
    with pytest.raises(ValueError, match="cannot import module 'no_such_reward_module'"):
        load_reward("no_such_reward_module:reward")
    with pytest.raises(ValueError, match="has a 'weight' but no 'spec'"):
        load_reward([{"type": "length", "weight": 2}])
    with pytest.raises(ValueError, match="weight of a sum component must be a finite number"):
        load_reward([{"spec": "length", "weight": math.nan}])


# --- fingerprints ----------------------------------------------------------------------------------


def test_fingerprint_is_stable_and_ignores_the_spelling_of_the_spec():
    assert spec_fingerprint("length") == spec_fingerprint({"type": "length"})
    assert spec_fingerprint(["length"]) == spec_fingerprint(
        {"type": "sum", "components": [{"spec": "length", "weight": 1}]}
    )
    assert spec_fingerprint("length") != spec_fingerprint({"type": "length", "target_words": 5})
    assert spec_fingerprint(["length"]) != spec_fingerprint([{"spec": "length", "weight": 2}])


def test_fingerprint_changes_when_the_callables_file_changes(reward_file):
    before = spec_fingerprint(f"{reward_file}:chars")
    assert spec_fingerprint(f"{reward_file}:chars") == before
    reward_file.write_text(REWARD_SOURCE.replace("float(len(r))", "float(len(r)) + 1"))
    assert spec_fingerprint(f"{reward_file}:chars") != before


def test_fingerprint_changes_when_a_modules_file_changes(reward_module, tmp_path):
    before = spec_fingerprint(f"{reward_module}:chars")
    (tmp_path / f"{reward_module}.py").write_text(REWARD_SOURCE + "\n# edited\n")
    assert spec_fingerprint(f"{reward_module}:chars") != before


def test_fingerprint_changes_when_a_named_file_option_changes(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"prompt": "p", "response": "one"}\n')
    before = spec_fingerprint({"type": "diversity", "corpus": str(corpus)})
    corpus.write_text('{"prompt": "p", "response": "two"}\n')
    assert spec_fingerprint({"type": "diversity", "corpus": str(corpus)}) != before


def test_a_copied_corpus_keeps_the_fingerprint(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"prompt": "p", "response": "one"}\n')
    copy = shutil.copy(corpus, tmp_path / "elsewhere.jsonl")  # a new path and a new mtime
    assert spec_fingerprint({"type": "diversity", "corpus": str(copy)}) == spec_fingerprint(
        {"type": "diversity", "corpus": str(corpus)}
    )


def test_a_corpus_folder_or_a_list_of_files_stands_for_its_content_not_its_path(tmp_path):
    """An option naming a folder (a saved dataset) or a list of files: editing a file below
    changes the reward's fingerprint, copying the whole elsewhere does not."""
    folder = tmp_path / "corpus"
    (folder / "part").mkdir(parents=True)
    (folder / "part" / "data.jsonl").write_text('{"prompt": "p", "response": "one"}\n')
    listed = tmp_path / "listed.txt"
    listed.write_text("one")

    def fingerprint(where: str, files: list[str]) -> str:
        function = {"type": "callable", "path": f"{tmp_path}/r.py:f", "kwargs": {"files": files}}
        return spec_fingerprint([{"type": "diversity", "corpus": str(where)}, function])

    (tmp_path / "r.py").write_text(
        "def f(prompts, responses, files):\n    return [0.0] * len(prompts)\n"
    )
    before = fingerprint(folder, [str(listed)])
    elsewhere = shutil.copytree(folder, tmp_path / "moved")
    assert fingerprint(elsewhere, [str(shutil.copy(listed, tmp_path / "other.txt"))]) == before
    (folder / "part" / "data.jsonl").write_text('{"prompt": "p", "response": "two"}\n')
    assert fingerprint(folder, [str(listed)]) != before
    listed.write_text("two")
    assert fingerprint(elsewhere, [str(listed)]) != fingerprint(
        elsewhere, [str(tmp_path / "other.txt")]
    )


def test_a_functions_option_naming_a_folder_stays_a_path(tmp_path):
    """What a function reads of a folder is its own (a cache, its outputs, "." as a separator,
    which would be the run itself): unlike a built-in scorer's corpus, it is not read whole."""
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "entry.bin").write_bytes(b"0")
    spec = {"type": "callable", "path": f"{tmp_path}/r.py:f", "kwargs": {"cache": str(folder)}}
    before = spec_fingerprint(spec)

    (folder / "entry.bin").write_bytes(b"1")

    assert spec_fingerprint(spec) == before


def test_a_classifier_copied_elsewhere_keeps_its_fingerprint(tmp_path, tiny_tokenizer):
    """Moving a run folder with its reward model inside must not redo the stages it keyed."""
    original = tmp_path / "run" / "reward_model"
    build_classifier(tiny_tokenizer, "gpt2", num_labels=1).save_pretrained(original)
    before = spec_fingerprint({"type": "classifier", "path": str(original)})
    moved = tmp_path / "moved" / "reward_model"
    copy = shutil.copytree(original, moved, copy_function=shutil.copy)  # new mtimes too
    (copy / "checkpoint-3").mkdir()  # a Trainer checkpoint beside it is not what loads
    (copy / "checkpoint-3" / "optimizer.pt").write_bytes(b"state")
    assert spec_fingerprint({"type": "classifier", "path": str(copy)}) == before


def test_a_classifier_under_another_name_is_another_reward(tmp_path, tiny_tokenizer):
    """Unnamed, a classifier's scores are logged under its folder's name, which caches keep."""
    original = tmp_path / "reward_model"
    build_classifier(tiny_tokenizer, "gpt2", num_labels=1).save_pretrained(original)
    renamed = shutil.copytree(original, tmp_path / "harmless")
    assert spec_fingerprint({"type": "classifier", "path": str(renamed)}) != spec_fingerprint(
        {"type": "classifier", "path": str(original)}
    )
    assert spec_fingerprint(
        {"type": "classifier", "path": str(renamed), "name": "reward_model"}
    ) == spec_fingerprint({"type": "classifier", "path": str(original)})


def test_fingerprint_changes_when_the_classifiers_weights_change(tmp_path, tiny_tokenizer):
    build_classifier(tiny_tokenizer, "gpt2", num_labels=1).save_pretrained(tmp_path)
    spec = {"type": "classifier", "path": str(tmp_path)}
    before = spec_fingerprint(spec)
    assert spec_fingerprint(spec) == before
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    with torch.no_grad():
        model.score.weight.add_(1.0)
    model.save_pretrained(tmp_path)
    assert spec_fingerprint(spec) != before
