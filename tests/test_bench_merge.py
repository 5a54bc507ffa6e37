"""The HH benchmark runs in parts, each for some seeds and objectives; a part run where an
earlier part's run folder is gone adds its models to the earlier results, never mixing rows
from another setup."""

import json
from pathlib import Path

import pytest

from bench.hh_results import merge_results, read_results, refuse_another_setup, summary
from bench.hh_smollm2 import timed

SETUP = {
    "commit": "abc1234",
    "sizes": {"train_prompts": 1200},
    "reward_model": {"heldout": {"pairwise_accuracy": 0.636}},
    "judges": {"helpfulness": {"heldout": {"pairwise_accuracy": 0.575}, "path": "/a/judge"}},
}


def part(seeds: dict) -> dict:
    return {**SETUP, "hours": 1.0, **summary(seeds)}


def row(reward: float) -> dict:
    return {"reward": reward, "flag": None}


def as_read_back(result: dict) -> dict:
    """An earlier part as its JSON file reads back: the seeds are strings."""
    return {**result, "per_seed": {str(s): run for s, run in result["per_seed"].items()}}


EARLIER = as_read_back(
    part(
        {
            0: {
                "rows": {"reference": row(0.46), "nll": row(0.47)},
                "times": {"sft": None, "nll": 60.0},
            },
            1: {
                "rows": {"reference": row(0.45), "nll": row(0.48)},
                "times": {"sft": 50.0, "nll": 70.0},
            },
        }
    )
)


def test_a_part_adds_its_models_to_the_earlier_ones_and_the_table_follows():
    later = part(
        {
            0: {
                "rows": {"reference": row(0.46), "a_lol": row(0.50)},
                "times": {"sft": 40.0, "a_lol": 30.0},
            }
        }
    )
    merged = merge_results(EARLIER, later, Path("earlier.json"))
    assert list(merged["per_seed"][0]["rows"]) == ["reference", "nll", "a_lol"]
    assert merged["table"]["nll"]["reward"]["values"] == [0.47, 0.48]
    assert merged["table"]["a_lol"]["reward"]["values"] == [0.50]
    assert merged["seeds"] == [0, 1]
    assert merged["per_seed"][0]["times"]["sft"] == 40.0  # timed whole now, in part before
    assert merged["not_timed"] == {}
    assert merged["stage_hours"] == pytest.approx((40 + 60 + 30 + 50 + 70) / 3600)


def test_a_seeds_reward_flags_survive_a_later_part_that_read_no_audit_of_it():
    flag = "the reward pays for a constant answer: “You’re welcome!” scores 1.062, above 1.059"
    earlier = as_read_back(
        part({0: {"rows": {"reference": row(0.46)}, "times": {}, "reward_flags": [flag]}})
    )
    later = part({0: {"rows": {"a_lol": row(0.50)}, "times": {}}})

    merged = merge_results(earlier, later, Path("earlier.json"))

    assert merged["per_seed"][0]["reward_flags"] == [flag]


def test_the_later_row_wins_and_a_whole_timing_is_not_lost_to_a_resumed_one():
    later = part({1: {"rows": {"nll": row(0.49)}, "times": {"nll": None}}})
    merged = merge_results(EARLIER, later, Path("earlier.json"))
    assert merged["per_seed"][1]["rows"]["nll"]["reward"] == 0.49
    assert merged["per_seed"][1]["times"]["nll"] == 70.0
    assert merged["not_timed"] == {0: ["sft"]}


def test_a_judge_folder_elsewhere_still_merges():
    judges = {"helpfulness": {**SETUP["judges"]["helpfulness"], "path": "/b/judge"}}
    later = {**part({}), "judges": judges}
    assert merge_results(EARLIER, later, Path("earlier.json"))["seeds"] == [0, 1]


@pytest.mark.parametrize(
    "field, value",
    [
        ("commit", "def5678"),
        ("sizes", {"train_prompts": 600}),
        ("reward_model", {"heldout": {"pairwise_accuracy": 0.61}}),
        ("judges", {"helpfulness": {"heldout": {"pairwise_accuracy": 0.6}, "path": "/a/judge"}}),
    ],
)
def test_parts_of_another_setup_are_refused_naming_the_file_and_field(field, value):
    later = {**part({}), field: value}
    with pytest.raises(SystemExit, match=f"earlier.json: its '{field}' is"):
        merge_results(EARLIER, later, Path("earlier.json"))


def test_another_setup_is_refused_from_the_setup_alone_before_any_model_is_trained():
    refuse_another_setup(EARLIER, SETUP, Path("earlier.json"))
    refit = {**SETUP, "reward_model": {"heldout": {"pairwise_accuracy": 0.635}}}
    with pytest.raises(SystemExit, match="earlier.json: its 'reward_model' is"):
        refuse_another_setup(EARLIER, refit, Path("earlier.json"))


def test_an_unreadable_earlier_part_is_refused_naming_it(tmp_path):
    broken = tmp_path / "part.json"
    broken.write_text('{"commit": ')
    with pytest.raises(SystemExit, match=f"--merge-with {broken}: not a readable results file"):
        read_results(broken)
    with pytest.raises(SystemExit, match="not a readable results file"):
        read_results(tmp_path / "absent.json")


def fake_stage(folder: Path, fingerprint: str, checkpoint: bool = False):
    """A stage that, when it runs, finishes with `fingerprint` (and leaves a checkpoint)."""

    def run() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        marker = folder / "stage.json"
        if not marker.exists() or json.loads(marker.read_text())["fingerprint"] != fingerprint:
            marker.write_text(json.dumps({"fingerprint": fingerprint, "status": "done"}))
        if checkpoint:
            (folder / "checkpoints" / "checkpoint-25").mkdir(parents=True, exist_ok=True)
            (folder / "checkpoints" / "checkpoint-25" / "trainer_state.json").write_text("{}")

    return run


def test_a_stage_is_timed_and_its_commit_kept_by_the_run_that_did_it(tmp_path, monkeypatch):
    monkeypatch.setattr("bench.hh_smollm2.commit", lambda: "aaa1111")
    times, folder = tmp_path / "bench_times.json", tmp_path / "train" / "a_lol"
    timed(times, "a_lol", folder, fake_stage(folder, "inputs-1", checkpoint=True))
    first = json.loads(times.read_text())["a_lol"]
    assert first is not None and json.loads((tmp_path / "bench_commits.json").read_text()) == {
        "a_lol": "aaa1111"
    }

    monkeypatch.setattr("bench.hh_smollm2.commit", lambda: "bbb2222")
    timed(times, "a_lol", folder, fake_stage(folder, "inputs-1"))
    assert json.loads((tmp_path / "bench_commits.json").read_text())["a_lol"] == "aaa1111", (
        "a stage found up to date did no work here"
    )
    timed(times, "a_lol", folder, fake_stage(folder, "inputs-2"))
    assert json.loads((tmp_path / "bench_commits.json").read_text())["a_lol"] == "bbb2222"
    assert json.loads(times.read_text())["a_lol"] is not None, (
        "trained again on changed inputs: timed whole, though the old run left checkpoints"
    )
