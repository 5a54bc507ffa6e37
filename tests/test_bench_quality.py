"""The quality benchmark resumes by seed: a finished seed is read back, and a seed stopped
part-way is refused rather than timed as the skips its finished stages now are."""

import json

import pytest

from bench.quality import SeedRun, run_seed


def test_a_finished_seed_is_read_back_from_its_folder(tmp_path):
    finished = SeedRun({"nll": {"reward": 0.7, "seconds": 30.0}}, ["a flag"], {"nll": 30.0})
    (tmp_path / "seed-3").mkdir()
    (tmp_path / "seed-3" / "bench.json").write_text(json.dumps(finished.__dict__))
    assert run_seed(3, tmp_path) == finished


def test_a_seed_stopped_part_way_is_refused_naming_its_folder(tmp_path):
    (tmp_path / "seed-1" / "sft").mkdir(parents=True)
    with pytest.raises(SystemExit, match="seed-1 holds seed 1 stopped part-way"):
        run_seed(1, tmp_path)
