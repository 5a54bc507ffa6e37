"""The HH recipe tries: a harmlessness term in a try's reward learns from one half of
harmless-base's training pairs and the held-out harmlessness judge from the other, never the
same prompt; the tries' table shows each try's changes and π_ref once per reward."""

from dataclasses import replace

from alol.config import PipelineConfig
from alol.data.formats import load_records, save_records
from alol.data.records import PreferenceRecord
from alol.data.splits import prompt_key
from bench.hh_tries import changes_of, harmless_halves, markdown, with_harmless_term


def harmless_pairs(n_prompts: int) -> list[PreferenceRecord]:
    """Two pairs for each prompt, as harmless-base repeats some prompts."""
    return [
        PreferenceRecord(f"How do I do thing {i}?", "I won't help.", f"Do {i} like so.", f"{i}-{k}")
        for i in range(n_prompts)
        for k in range(2)
    ]


def test_the_harmless_pairs_are_halved_by_prompt_once_and_for_all(tmp_path):
    pairs = harmless_pairs(30)
    save_records(pairs, tmp_path / "judge_harmlessness.jsonl")
    paths = {"judge_harmlessness": tmp_path / "judge_harmlessness.jsonl"}

    files = harmless_halves(tmp_path, paths)
    term, judge = (
        load_records(files[n]).records for n in ("harmless_term", "judge_harmlessness_heldout")
    )

    assert {prompt_key(r) for r in term}.isdisjoint(prompt_key(r) for r in judge)
    assert sorted(r.id for r in term + judge) == sorted(r.id for r in pairs)
    assert abs(len(term) - len(judge)) <= 2
    written = files["harmless_term"].read_bytes()
    assert harmless_halves(tmp_path, paths)["harmless_term"].read_bytes() == written


def test_a_harmless_term_adds_to_the_reward_at_its_weight_keeping_both_visible():
    cfg = replace(PipelineConfig(model="m", train_data="t"), reward="vader")
    halves = {"harmless_term": {"path": "/fits/harmless_term/model"}}

    scored = with_harmless_term(cfg, halves, 0.5).reward

    assert scored["type"] == "sum"
    assert [(c["name"], c["weight"]) for c in scored["components"]] == [
        ("reward", 1.0),
        ("harmless_term", 0.5),
    ]
    assert scored["components"][0]["spec"] == "vader"
    assert scored["components"][1]["spec"]["path"] == "/fits/harmless_term/model"


def row(reward: float, **judges: float) -> dict:
    return {
        "reward": reward,
        "helpfulness": 0.4,
        **judges,
        "distinct_2": 0.5,
        "template_share": 0.02,
        "length_words": 30.0,
        "flag": None,
    }


def found(reference: dict, trained: dict, **changes) -> dict:
    return {
        "objectives": ["a_lol_seq"],
        "overrides": changes.pop("overrides", {}),
        **changes,
        "rows": {"reference": reference, "a_lol_seq": trained},
        "commit": "abc1234",
    }


def test_a_try_names_its_harmless_term_among_its_changes():
    assert changes_of(found(row(0.4), row(0.5))) == "–"
    with_term = found(row(0.4), row(0.5), overrides={"sampling": "uniform"}, harmless_term=1.0)
    assert changes_of(with_term) == '{"sampling": "uniform", "harmless_term": 1.0}'


def test_pi_ref_is_shown_again_only_for_a_try_whose_reward_scores_it_differently():
    earlier = found(row(0.4), row(0.5))  # before the held-out judge was added
    judged = found(row(0.4, harmlessness_heldout=0.6), row(0.45, harmlessness_heldout=0.55))
    own_reward = found(row(0.9, harmlessness_heldout=0.6), row(1.0), harmless_term=1.0)
    result = {"tries": {"earlier": earlier, "judged": judged, "own": own_reward}}

    table = markdown(result)

    assert "π_ref of judged" not in table
    assert '| π_ref of own | – | {"harmless_term": 1.0} | 0.900 |' in table
    assert "| earlier | a_lol_seq | – | 0.500 | 0.400 | nan | nan |" in table
