"""The HH recipe tries: the tries' table shows what each try changes from the recipe at the
time it ran, its harmlessness term's weight among them, and π_ref once per reward."""

import json
from dataclasses import replace

import pytest

from alol.config import PipelineConfig
from alol.pipeline.trainer_setup import training_fingerprint_parts
from bench.hh_tries import TRIES, earlier_tries, shared_stages_config
from bench.hh_tries_report import changes_of, markdown
from bench.hh_tries_seeds import across_seeds
from bench.hh_tries_seeds import markdown as seeds_markdown


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


def test_a_try_names_its_harmless_term_where_it_differs_from_the_recipe_it_ran_on():
    assert changes_of(found(row(0.4), row(0.5))) == "–"
    before_the_term = found(
        row(0.4), row(0.5), overrides={"sampling": "uniform"}, harmless_term=1.0
    )
    assert changes_of(before_the_term) == '{"sampling": "uniform", "harmless_term": 1.0}'
    recipe = found(row(0.4), row(0.5), harmless_term=1.0, recipe_harmless_term=1.0)
    assert changes_of(recipe) == "–"
    without = found(row(0.4), row(0.5), harmless_term=0.0, recipe_harmless_term=1.0)
    assert changes_of(without) == '{"harmless_term": 0.0}'


FIT = {"pairs": 100, "heldout": {"pairwise_accuracy": 0.6}, "test_prefers_human_choice": 0.58}


def test_pi_ref_is_shown_again_only_for_a_try_whose_reward_scores_it_differently():
    earlier = found(row(0.4), row(0.5))  # before the safety judge was added
    judged = found(row(0.4, safety=0.9), row(0.45, safety=0.95))
    own_reward = found(row(0.9, safety=0.9), row(1.0), harmless_term=1.0)
    result = {
        "seed": 0,
        "harmless_term": {**FIT, "weight": 1.0, "test_pairs": 79},
        "harmlessness_judge": {**FIT, "test_pairs": 79},
        "tries": {"earlier": earlier, "judged": judged, "own": own_reward},
    }

    table = markdown(result)

    assert table.startswith("# Recipe tries on the judged HH benchmark, seed 0, validation")
    assert "π_ref of judged" not in table
    assert '| π_ref of own | – | {"harmless_term": 1.0} | 0.900 |' in table
    assert "| earlier | a_lol_seq | – | 0.500 | 0.400 | nan | nan | nan |" in table
    assert "harmlessness term (weight 1 unless a try changes it) is Bradley–Terry on 100" in table


def test_each_row_shows_the_reward_models_own_part_where_the_run_kept_it():
    recipe = found(row(1.04, reward_model_part=0.48), row(1.06, reward_model_part=0.46))
    earlier = found(row(1.04), row(1.05))  # before the part was kept
    result = {
        "seed": 1,
        "harmless_term": {**FIT, "weight": 1.0, "test_pairs": 79},
        "harmlessness_judge": {**FIT, "test_pairs": 79},
        "tries": {"earlier": earlier, "recipe": recipe},
    }

    lines = markdown(result).splitlines()

    assert "| words | reward model's part | flag | commit |" in lines[4]
    assert next(line for line in lines if line.startswith("| recipe |")).endswith(
        "| 30.0 | 0.460 | – | abc1234 |"
    )
    assert next(line for line in lines if line.startswith("| earlier |")).endswith(
        "| 30.0 | – | – | abc1234 |"
    )


def test_a_try_that_trained_in_float32_where_the_recipe_asks_for_bf16_says_so_by_its_commit():
    """A CPU without native bf16 trains the recipe in float32 (`alol.train.precision`)."""
    emulated = found(row(1.04), row(1.06), training_precision="float32 (bf16 asked for, ...)")
    native = found(row(1.04), row(1.05), training_precision="bf16 autocast")
    earlier = found(row(1.04), row(1.05))  # before the precision was kept: bf16 autocast
    result = {
        "seed": 2,
        "harmless_term": {**FIT, "weight": 1.0, "test_pairs": 79},
        "harmlessness_judge": {**FIT, "test_pairs": 79},
        "tries": {"earlier": earlier, "emulated": emulated, "native": native},
    }

    lines = markdown(result).splitlines()

    ending = {
        name: next(x for x in lines if x.startswith(f"| {name} |")) for name in result["tries"]
    }
    assert ending["emulated"].endswith("| abc1234, float32 |")
    assert ending["native"].endswith("| abc1234 |") and ending["earlier"].endswith("| abc1234 |")


def test_a_gated_try_shows_its_pi_ref_and_says_how_well_its_gate_tells_requests_apart():
    recipe = found(row(1.04), row(1.06), harmless_term=1.0, recipe_harmless_term=1.0)
    gated = found(
        row(0.8), row(0.83), harmless_term=1.0, recipe_harmless_term=1.0, gated=True,
        request_gate={"accuracy": 0.912, "positive_share": 0.26, "balanced_accuracy": 0.88},
        constants=[{"text": "Sorry?", "origin": "probe", "reward": 0.79}],
    )  # fmt: skip
    result = {
        "seed": 1,
        "harmless_term": {**FIT, "weight": 1.0, "test_pairs": 79},
        "harmlessness_judge": {**FIT, "test_pairs": 79},
        "tries": {"seq_harmless_gated": gated, "seq_recipe": recipe},
    }

    table = markdown(result)

    assert changes_of(gated) == '{"harmless_term_on": "red-team requests"}'
    assert table.splitlines()[6].startswith("| π_ref | – | – | 1.040 |")
    assert '| π_ref of seq_harmless_gated | – | {"harmless_term_on": "red-team' in table
    assert "held-out accuracy 0.912 with 26% red-team prompts, balanced accuracy 0.880" in table
    assert "0 of the audit's 1 constant answers score above π_ref (0.800)" in table


def test_the_first_pi_ref_row_is_scored_by_the_recipes_reward_whatever_the_tries_order():
    half = found(row(0.7), row(0.68), harmless_term=0.5, recipe_harmless_term=1.0)
    recipe = found(row(1.04), row(1.06), harmless_term=1.0, recipe_harmless_term=1.0)
    result = {
        "seed": 1,
        "harmless_term": {**FIT, "weight": 1.0, "test_pairs": 79},
        "harmlessness_judge": {**FIT, "test_pairs": 79},
        "tries": {"seq_harmless_half": half, "seq_recipe": recipe},  # as read back, sorted
    }

    rows = [line for line in markdown(result).splitlines() if line.startswith("| π_ref")]

    assert rows[0].startswith("| π_ref | – | – | 1.040 |")
    assert rows[1].startswith('| π_ref of seq_harmless_half | – | {"harmless_term": 0.5} | 0.700 |')
    assert len(rows) == 2


def test_tries_of_one_seed_never_join_a_results_file_of_another_seeds_tries(tmp_path):
    results = tmp_path / "hh_tries.json"
    assert earlier_tries(results, seed=1) == {}
    results.write_text(json.dumps({"tries": {"seq_recipe": found(row(0.4), row(0.5))}}))

    assert list(earlier_tries(results, seed=0)) == ["seq_recipe"]  # written before seeds: 0
    with pytest.raises(SystemExit, match="holds seed 0's tries, not seed 1's"):
        earlier_tries(results, seed=1)


@pytest.mark.parametrize(
    "name", ["seq_passes", "seq_balanced", "seq_uniform", "seq_lora_r64", "seq_lora_authors"]
)
def test_a_try_of_how_a_lol_draws_or_of_its_lora_keeps_its_seeds_pi_ref(name, tmp_path):
    seed_cfg = PipelineConfig(run_dir=str(tmp_path), seed=1, lora=True)
    try_cfg = replace(seed_cfg, **TRIES[name].overrides)

    shared = shared_stages_config(try_cfg, seed_cfg)

    def sft_settings(cfg):
        return training_fingerprint_parts(cfg, "nll", tmp_path / "sft", 10, with_eval=False)

    assert sft_settings(shared) == sft_settings(seed_cfg)
    assert replace(shared, **TRIES[name].overrides) == try_cfg


def test_a_try_of_what_pi_ref_learns_from_trains_its_own(tmp_path):
    seed_cfg = PipelineConfig(run_dir=str(tmp_path), seed=1)
    try_cfg = replace(seed_cfg, **TRIES["long"].overrides)

    assert shared_stages_config(try_cfg, seed_cfg) == try_cfg


def test_the_table_lists_tries_by_name_as_written_during_a_run_and_again_from_the_file():
    recipe = found(row(1.04), row(1.06), harmless_term=1.0, recipe_harmless_term=1.0)
    balanced = found(row(1.04), row(1.05), overrides={"balance_groups": True})
    result = {
        "seed": 1,
        "harmless_term": {**FIT, "weight": 1.0, "test_pairs": 79},
        "harmlessness_judge": {**FIT, "test_pairs": 79},
    }
    in_run_order = markdown({**result, "tries": {"seq_recipe": recipe, "seq_balanced": balanced}})
    from_file = markdown({**result, "tries": {"seq_balanced": balanced, "seq_recipe": recipe}})

    assert in_run_order == from_file
    names = [line.split(" | ")[0] for line in in_run_order.splitlines() if line.startswith("| seq")]
    assert names == ["| seq_balanced", "| seq_recipe"]


def test_over_seeds_each_try_shows_its_change_from_its_own_seeds_pi_ref_with_the_spread():
    """Seeds compare by their changes: seed 1's π_ref scores higher than seed 0's, yet the
    try raised the reward by 0.10 on both; a try that one seed ran has no spread."""
    seed_0 = {
        "seed": 0,
        "tries": {
            "r64": found(row(0.40), row(0.50)),
            "only_here": found(row(0.40), {**row(0.45), "flag": "collapsed"}),
        },
    }
    seed_1 = {"seed": 1, "tries": {"r64": found(row(0.60), row(0.70, helpfulness=0.5))}}

    summary = {(r["try"], r["objective"]): r for r in across_seeds([seed_0, seed_1])}

    r64 = summary["r64", "a_lol_seq"]
    assert r64["seeds"] == [0, 1]
    assert r64["changes"]["reward"]["mean"] == pytest.approx(0.10)
    assert r64["changes"]["reward"]["sd"] == pytest.approx(0.0, abs=1e-12)
    assert r64["changes"]["helpfulness"]["mean"] == pytest.approx(0.05)
    assert r64["flagged"] == []
    only_here = summary["only_here", "a_lol_seq"]
    assert only_here["changes"]["reward"]["sd"] is None
    assert only_here["flagged"] == [0]
    table = seeds_markdown(list(summary.values()), ["s0", "s1"])
    assert "| only_here | a_lol_seq | 0 | +0.050 | +0.000 |" in table
    assert "| r64 | a_lol_seq | 0, 1 | +0.100 ± 0.000 | +0.050 ± 0.071 |" in table
