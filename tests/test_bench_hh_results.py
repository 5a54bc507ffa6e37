"""The HH benchmark's results read back: the table keeps its rows in the order a reader
compares them, each model's change from π_ref is paired by seed, and a results file written by
an older commit gets this commit's table and picture."""

import json
import shutil
from pathlib import Path

import pytest

from bench.hh_results import ROW_ORDER, markdown, plot, rewrite, seed_changes, summary

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def row(reward: float, relevance: float) -> dict:
    return {"reward": reward, "relevance": relevance, "relevance_win_rate": 0.5, "flag": None}


SEEDS = {
    0: {"rows": {"reference": row(0.46, 0.40), "a_lol": row(0.50, 0.36)}, "times": {}},
    1: {"rows": {"reference": row(0.44, 0.42), "a_lol": row(0.50, 0.40)}, "times": {}},
}


def test_each_models_change_is_from_its_own_seeds_pi_ref_with_the_spread_over_seeds():
    """Reward +0.04 and +0.06: mean 0.05, sd 0.0141, se 0.01; relevance −0.04 and −0.02:
    mean −0.03, se 0.01. A measure is a judge when a win-rate stands beside it."""
    changes = seed_changes(SEEDS)

    assert list(changes) == ["a_lol"]
    assert changes["a_lol"]["reward"] == pytest.approx((0.05, 0.01))
    assert changes["a_lol"]["relevance"] == pytest.approx((-0.03, 0.01))


def test_a_model_on_one_seed_has_no_spread_rather_than_a_spread_of_zero():
    result = json.loads((RESULTS / "hh_smollm2_harmless.json").read_text())
    for seed in ("1", "2"):
        del result["per_seed"][seed]["rows"]["nll"], result["per_seed"][seed]["times"]["nll"]

    result.update(summary({int(seed): run for seed, run in result["per_seed"].items()}))

    assert result["table"]["reference"]["reward"]["sd"] > 0
    assert result["table"]["nll"]["reward"]["sd"] is None
    nll_row = next(line for line in markdown(result).splitlines() if line.startswith("| nll |"))
    assert nll_row.startswith("| nll | 1 | 1.067 |")
    assert "±" not in nll_row


def test_the_table_keeps_pi_ref_first_though_json_sorts_the_rows_by_name():
    rows = {name: row(0.5, 0.4) for name in ["wbc", "a_lol_seq", "reference", "nll", "dpo"]}
    read_back = json.loads(json.dumps({0: {"rows": rows, "times": {}}}, sort_keys=True))

    table = summary({int(s): run for s, run in read_back.items()})["table"]

    assert list(table) == ["reference", "nll", "wbc", "a_lol_seq", "dpo"]
    assert list(table) == [name for name in ROW_ORDER if name in table]


def test_a_results_file_gets_this_commits_table_and_picture_again(tmp_path):
    written = tmp_path / "hh_smollm2_harmless.json"
    shutil.copyfile(RESULTS / "hh_smollm2_harmless.json", written)

    rewrite(written)

    table = written.with_suffix(".md").read_text()
    first_row = next(line for line in table.splitlines() if line.startswith("| π_ref"))
    assert table.index(first_row) < table.index("| nll |") < table.index("| a_lol |")
    assert "Targets, for the A-LoL variant chosen on the validation prompts, **a_lol_seq**" in table
    assert written.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(written.read_text())["per_seed"]["1"]["rows"]["a_lol_seq"]["flag"]


@pytest.mark.parametrize(
    ("name", "training_reward"),
    [
        ("hh_smollm2_harmless.json", "that reward model plus 1 × a harmlessness term"),
        ("hh_smollm2_refitted.json", "that reward model alone, as in the paper."),
    ],
)
def test_the_table_names_the_training_reward_a_term_at_weight_0_left_out(name, training_reward):
    table = markdown(json.loads((RESULTS / name).read_text()))

    assert f"Training reward: {training_reward}" in table
    assert "0 × a harmlessness term" not in table


def test_the_picture_marks_a_model_flagged_on_any_seed(tmp_path, monkeypatch):
    flagged_seeds = json.loads(json.dumps(SEEDS))
    flagged_seeds["1"]["rows"]["a_lol"]["flag"] = "a_lol: reward +0.06 but relevance −0.02"
    drawn = {}
    monkeypatch.setattr(
        "bench.hh_results.plot_reward_against_judges",
        lambda changes, flagged, path, title: drawn.update(flagged=flagged),
    )

    plot({"per_seed": flagged_seeds}, tmp_path / "picture.png")

    assert drawn["flagged"] == {"a_lol"}


def test_a_model_run_on_one_seed_is_labelled_so_in_the_picture(tmp_path, monkeypatch):
    one_seed = json.loads(json.dumps(SEEDS))
    one_seed["0"]["rows"]["pro"] = {**row(0.55, 0.30), "flag": "pro: reward +0.09"}
    drawn = {}
    monkeypatch.setattr(
        "bench.hh_results.plot_reward_against_judges",
        lambda changes, flagged, path, title: drawn.update(changes=changes, flagged=flagged),
    )

    plot({"per_seed": one_seed}, tmp_path / "picture.png")

    assert set(drawn["changes"]) == {"a_lol", "pro (1 seed)"}
    assert drawn["flagged"] == {"pro (1 seed)"}


def test_no_picture_before_any_model_has_trained(tmp_path):
    only_reference = {0: {"rows": {"reference": row(0.46, 0.40)}, "times": {}}}

    assert plot({"per_seed": only_reference}, tmp_path / "picture.png") is None
    assert not (tmp_path / "picture.png").exists()
