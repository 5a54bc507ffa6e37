"""The SmolLM2 demo's A-LoL variant is chosen on validation: the best mean reward among the
variants the audit never flags."""

from __future__ import annotations

from bench import demo_variants


def figures(rewards: dict[str, float], flagged: tuple[str, ...] = ()) -> dict:
    models = {
        name: {
            "reward": rewards.get(name, 0.5),
            "relevance": 0.6,
            "informativeness": 0.5,
            "safety": 0.9,
            "distinct_2": 0.7,
            "words": 30.0,
            "flag": f"{name}: a judge falls" if name in flagged else None,
        }
        for name in demo_variants.MODELS
    }
    return {"models": models, "reward_flags": []}


def seed(rewards: dict[str, float], flagged: tuple[str, ...] = ()) -> dict:
    """A seed's figures on validation as given; on test, every variant flagged (which the
    choice must not read)."""
    return {
        "validation": figures(rewards, flagged),
        "test": figures({}, flagged=demo_variants.VARIANTS),
    }


def test_a_variant_flagged_on_any_seed_is_passed_over_for_the_best_unflagged_one_ahead():
    per_seed = {
        "0": seed({"a_lol_seq": 0.60, "a_lol": 0.57, "a_lol_kl": 0.58, "nll": 0.55}),
        "1": seed(
            {"a_lol_seq": 0.60, "a_lol": 0.57, "a_lol_kl": 0.55, "nll": 0.55},
            flagged=("a_lol_seq",),
        ),
    }

    chosen, why = demo_variants.chosen_variant(per_seed)

    assert chosen == "a_lol"  # 0.570 against a_lol_kl's 0.565; a_lol_seq is flagged on seed 1
    assert "0.570" in why and "a_lol_seq" not in why


def test_an_unflagged_variant_that_is_not_ahead_of_nll_does_not_qualify():
    """A variant that barely leaves π_ref is never flagged; it must also beat π_ref and NLL."""
    per_seed = {
        "0": seed({"a_lol_seq": 0.60, "a_lol_kl": 0.54, "nll": 0.56}, flagged=("a_lol_seq",)),
        "1": seed({"a_lol_seq": 0.60, "a_lol_kl": 0.58, "nll": 0.56}),
    }
    for name in ("a_lol", "a_lol_ref_free"):
        for run in per_seed.values():
            run["validation"]["models"][name]["flag"] = "flagged"

    chosen, why = demo_variants.chosen_variant(per_seed)

    assert chosen == "a_lol_seq"  # the demo's default
    assert why.startswith("its default, as no variant qualifies")
    assert "a_lol_seq 0.600" in why and why.endswith("flagged on no seed: a_lol_kl")


def test_the_report_names_the_choice_and_each_model_s_flagged_seeds():
    per_seed = {"0": seed({}, flagged=("a_lol_seq",)), "1": seed({})}
    result = {"commit": "abc", "machine": "x86_64 CPU, 2 cores", "per_seed": per_seed}
    result["chosen"], result["why"] = demo_variants.chosen_variant(per_seed)

    text = demo_variants.markdown(result)

    validation, test = (line for line in text.splitlines() if line.startswith("| a_lol_seq |"))
    assert validation.startswith("| a_lol_seq | 0.500 ± 0.000 |") and validation.endswith("| 0 |")
    assert test.endswith("| 0, 1 |")
    assert text.index("Shown by the demo") < text.index("## The 79 test prompts")
    assert "Shown by the demo: **a_lol_seq**, its default" in text  # none is ahead of NLL
    assert "seed 0: reward" in text and "a_lol_seq: a judge falls" in text
