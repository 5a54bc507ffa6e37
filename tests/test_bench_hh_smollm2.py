"""The judged HH benchmark's training reward: the fitted reward model plus a harmlessness term
that learns from one half of harmless-base's training pairs, while the harmlessness judge
learns from the other, never the same prompt."""

from alol.data.records import PreferenceRecord, RankedRecord
from alol.data.splits import prompt_key
from alol.rewards.specs import normalize_spec
from bench.hh_smollm2 import harmless_halves, request_kinds, training_reward


def harmless_pairs(n_prompts: int) -> list[PreferenceRecord]:
    """Two pairs for each prompt, as harmless-base repeats some prompts."""
    return [
        PreferenceRecord(f"How do I do thing {i}?", "I won't help.", f"Do {i} like so.", f"{i}-{k}")
        for i in range(n_prompts)
        for k in range(2)
    ]


def test_the_harmless_pairs_are_halved_by_prompt_the_same_way_every_time():
    pairs = harmless_pairs(30)

    halves = harmless_halves(pairs)
    term, judge = halves["harmless_term"], halves["judge_harmlessness_heldout"]

    assert {prompt_key(r) for r in term}.isdisjoint(prompt_key(r) for r in judge)
    assert sorted(r.id for r in term + judge) == sorted(r.id for r in pairs)
    assert abs(len(term) - len(judge)) <= 2
    assert [r.id for r in term] == [r.id for r in pairs if r in term]  # in the data's order
    assert harmless_halves(pairs) == halves


def test_the_training_reward_adds_the_harmless_term_at_its_weight_keeping_both_visible():
    scored = normalize_spec(training_reward("/fits/rm/model", "/fits/harmless_term/model", 0.5))

    assert scored["type"] == "sum"
    assert [(c["spec"]["name"], c["weight"]) for c in scored["components"]] == [
        ("reward", 1.0),
        ("harmless_term", 0.5),
    ]
    assert scored["components"][0]["spec"]["path"] == "/fits/rm/model"
    assert scored["components"][1]["spec"]["path"] == "/fits/harmless_term/model"


def test_a_gated_training_reward_counts_the_harmless_term_on_red_team_requests_alone():
    scored = training_reward("/fits/rm/model", "/fits/term/model", 1.0, gate="/fits/gate/model")

    [reward, harmless] = normalize_spec(scored)["components"]
    assert reward["spec"]["path"] == "/fits/rm/model" and harmless["weight"] == 1.0
    assert harmless["spec"]["type"] == "gated"
    assert harmless["spec"]["term"] == {
        "type": "classifier",
        "path": "/fits/term/model",
        "name": "harmless_term",
    }
    assert harmless["spec"]["gate"]["path"] == "/fits/gate/model"
    assert harmless["spec"]["gate"]["name"] == "red_team_request"


def test_the_gate_learns_each_training_prompt_labelled_by_its_subset():
    records = [
        RankedRecord(f"Prompt {i}?", [" chosen", " rejected"], [1.0, 0.0], f"{subset}-{i}")
        for i, subset in enumerate(["harmless_base", "helpful_base", "helpful_online"])
    ]

    labelled = request_kinds(records)

    assert [(r.prompt, r.response, r.reward) for r in labelled] == [
        ("Prompt 0?", " chosen", 1.0),
        ("Prompt 1?", " chosen", 0.0),
        ("Prompt 2?", " chosen", 0.0),
    ]


def test_without_the_term_the_training_reward_is_the_reward_model_alone():
    scored = training_reward("/fits/rm/model", "/fits/harmless_term/model", 0.0)

    assert scored == {"type": "classifier", "path": "/fits/rm/model", "name": "reward"}
