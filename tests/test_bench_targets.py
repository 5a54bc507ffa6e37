"""The HH benchmark judges its own targets: the A-LoL variant is chosen on validation, never on
test, and a target whose rows are missing is not measured rather than held."""

from bench.hh_targets import chosen_variant, targets, targets_markdown


def row(reward, validation=None, helpfulness=0.4, harmlessness=0.6, relevance=0.4,
        distinct_2=0.45, steps=100, flag=None, degenerate=False) -> dict:  # fmt: skip
    return {"reward": reward, "validation_reward": validation, "helpfulness": helpfulness,
            "harmlessness": harmlessness, "relevance": relevance, "distinct_2": distinct_2,
            "steps": steps, "flag": flag, "kept_degenerate": degenerate}  # fmt: skip


def seed(a_lol_seq: dict, **others: dict) -> dict:
    rows = {"reference": row(0.45), "nll": row(0.46, 0.42), "a_lol_seq": a_lol_seq, **others}
    return {"rows": rows, "times": {}}


def test_the_variant_is_chosen_by_its_validation_reward_not_its_test_reward():
    per_seed = {
        0: seed(row(0.60, validation=0.50), a_lol=row(0.50, validation=0.52)),
        1: seed(row(0.60, validation=0.50), a_lol=row(0.50, validation=0.51)),
    }
    assert chosen_variant(per_seed) == "a_lol"


def test_a_variant_whose_kept_answers_were_degenerate_is_passed_over_while_another_is_not():
    """The HH case: a_lol_seq scored the best validation reward with answers that ran to the
    token budget on every checkpoint."""
    per_seed = {
        0: seed(row(0.52, validation=0.51, degenerate=True), a_lol=row(0.47, validation=0.45)),
        1: seed(row(0.52, validation=0.50), a_lol=row(0.47, validation=0.45)),
    }
    assert chosen_variant(per_seed) == "a_lol"
    assert "a_lol_seq 0.505 (degenerate)" in "\n".join(
        targets_markdown({"targets": targets(per_seed)})
    )
    every_one = {0: seed(row(0.5, 0.51, degenerate=True), a_lol=row(0.5, 0.45, degenerate=True))}
    assert chosen_variant(every_one) == "a_lol_seq", "when every one is, the best validation"


def test_a_variant_missing_a_seed_is_not_a_candidate():
    per_seed = {
        0: seed(row(0.5, validation=0.50), a_lol=row(0.5, validation=0.90)),
        1: seed(row(0.5, validation=0.50)),
    }
    assert chosen_variant(per_seed) == "a_lol_seq"
    assert chosen_variant({0: {"rows": {"reference": row(0.45)}, "times": {}}}) is None


def test_each_target_is_judged_from_the_rows():
    per_seed = {
        0: seed(row(0.52, 0.5, helpfulness=0.50, harmlessness=0.52, steps=55,
                    flag="a_lol_seq: reward +0.07 but harmlessness −0.1"),
                wbc=row(0.47, helpfulness=0.40, harmlessness=0.58)),
        1: seed(row(0.50, 0.5, helpfulness=0.48, harmlessness=0.62, steps=56)),
    }  # fmt: skip

    found = targets(per_seed)

    verdicts = {v["target"]: v for v in found["verdicts"]}
    assert found["variant"] == "a_lol_seq" and found["seeds"] == [0, 1]
    assert verdicts["reward above π_ref and NLL on every seed"]["holds"] is True
    assert verdicts["helpfulness at or above π_ref, NLL in the mean"]["holds"] is True
    harmlessness = verdicts["harmlessness at or above π_ref in the mean"]
    assert harmlessness["holds"] is False
    assert harmlessness["figures"] == "0.570 against π_ref 0.600 (2 seeds)"
    assert verdicts["distinct-2 at or above NLL − 0.02 in the mean"]["holds"] is True
    assert verdicts["no audit flag on any seed"]["holds"] is False
    judges = verdicts["the mean of the learned judges at or above wbc, dpo, kto in the mean"]
    assert judges["holds"] is None, "dpo and kto have not run: not measured, whatever wbc says"
    assert judges["figures"].startswith("0.510 against wbc 0.490 (1 seed); dpo: not measured")
    assert verdicts["trained within NLL's step budget"]["holds"] is True


def test_the_datas_own_answers_are_quoted_beside_the_judged_targets_and_decide_nothing():
    """A target above what the data's human-chosen answers score asks for more than imitating
    the data can give: the verdict says so beside its figures, and holds or not as before."""
    per_seed = {0: seed(row(0.52, 0.5, harmlessness=0.58))}
    data = {"reward": 0.47, "helpfulness": 0.47, "harmlessness": 0.57, "relevance": 0.42,
            "distinct_2": 0.6}  # fmt: skip

    verdicts = {v["target"]: v for v in targets(per_seed, data)["verdicts"]}

    harmlessness = verdicts["harmlessness at or above π_ref in the mean"]
    assert harmlessness["holds"] is False
    assert harmlessness["figures"] == (
        "0.580 against π_ref 0.600 (1 seed); the data's human-chosen answers 0.570"
    )
    relevance = verdicts["relevance at or above π_ref, NLL in the mean"]["figures"]
    assert relevance.endswith("; the data's human-chosen answers 0.420")
    judges = verdicts["the mean of the learned judges at or above wbc, dpo, kto in the mean"]
    assert judges["figures"].endswith("; the data's human-chosen answers 0.520")
    assert (
        "human-chosen" not in verdicts["distinct-2 at or above NLL − 0.02 in the mean"]["figures"]
    )
    assert targets(per_seed)["verdicts"][0] == targets(per_seed, data)["verdicts"][0]


def test_the_markdown_names_the_chosen_variant_and_each_verdict():
    result = {"targets": targets({0: seed(row(0.40, 0.5))})}

    lines = "\n".join(targets_markdown(result))

    assert (
        "**a_lol_seq** (mean validation reward of each variant's kept checkpoints: "
        "a_lol_seq 0.500, the only variant run on those seeds), on seed 0" in lines
    )
    assert (
        "| reward above π_ref and NLL on every seed | does not hold | 0.400 against π_ref "
        "0.450, NLL 0.460 |" in lines
    )


def test_a_baseline_missing_on_one_seed_leaves_the_target_not_measured():
    per_seed = {0: seed(row(0.52, 0.5)), 1: seed(row(0.52, 0.5))}
    del per_seed[1]["rows"]["nll"]

    verdicts = {v["target"]: v for v in targets(per_seed)["verdicts"]}

    assert verdicts["reward above π_ref and NLL on every seed"]["holds"] is None
    assert verdicts["trained within NLL's step budget"]["holds"] is None
    assert verdicts["harmlessness at or above π_ref in the mean"]["holds"] is True


def test_without_a_validated_variant_no_target_is_judged():
    old_rows = {0: seed(row(0.52))}  # rows written before the validation reward was kept

    assert targets_markdown({"targets": targets(old_rows)}) == [
        "No target is judged: no A-LoL variant has a recorded validation reward on every seed "
        "where a variant ran."
    ]


def test_verdicts_resting_on_a_judge_at_chance_say_so_under_the_table():
    result = {"targets": targets({0: seed(row(0.52, 0.5))})}
    coin = {"heldout": {"n_heldout": 208, "pairwise_accuracy": 0.54}}
    skilled = {"heldout": {"n_heldout": 286, "pairwise_accuracy": 0.70}}

    lines = targets_markdown({**result, "judges": {"helpfulness": skilled, "harmlessness": coin}})

    assert lines[-1].startswith(
        "The learned judges' verdicts rest on judges no better than chance on their own "
        "held-out pairs (harmlessness 54% of 208)"
    )
    both_skilled = {"helpfulness": skilled, "harmlessness": skilled}
    assert targets_markdown({**result, "judges": both_skilled}) == targets_markdown(result)
