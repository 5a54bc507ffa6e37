"""`alol reward-model`: a sequence classifier fitted on the data's scores or preferences, saved
as a folder the classifier reward loads, chained by `alol run` when no reward is named."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from alol.cli import main
from alol.demo.tiny_models import build_tiny_model, save_tiny
from alol.errors import AlolError
from alol.pipeline.reward_model_stage import fingerprinted_settings
from alol.reports.metrics import HeldOutAgreement
from alol.rewards import load_reward, score
from alol.rewards.classifier import SETTINGS_FILE, fitted_agreement
from alol.rewards.reward_model import (
    RewardModelConfig,
    ScoredResponse,
    load_backbone,
    reward_model_data,
)
from alol.rewards.reward_model_metrics import label_metrics, off_prompt_accuracy

TOPICS = ["bread", "tea", "rain", "music", "books", "cats", "trees", "boats", "snow", "sand"]
TOPICS += ["wind", "fish", "maps", "rice", "milk", "ships", "clocks", "birds", "lamps", "roads"]


def scored_rows() -> list[dict]:
    """A learnable score: 1 for a kind answer, 0 for a curt one, to 20 prompts."""
    return [
        {"prompt": f"Tell me about {topic}?", "response": response, "reward": reward}
        for topic in TOPICS
        for response, reward in ((f" I am happy to help with {topic}.", 1.0), (" No.", 0.0))
    ]


def write_config(tmp_path: Path, rows: list[dict], tiny_llama_dir: Path, **options) -> Path:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = {
        "model": str(tiny_llama_dir),
        "train_data": str(data),
        "run_dir": str(tmp_path / "run"),
        "reward_model": str(tiny_llama_dir),  # a tiny Llama as the classifier's backbone
        "reward_model_epochs": 6,
        "reward_model_learning_rate": 3e-3,
        "reward_model_batch_size": 8,
        "reward_model_max_length": 32,
        "max_prompt_length": 16,
        "max_response_length": 12,
        **options,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_reward_model_learns_stored_scores_and_loads_as_a_classifier_reward(
    tmp_path, tiny_llama_dir
):
    config = write_config(tmp_path, scored_rows(), tiny_llama_dir)

    assert main(["reward-model", str(config)]) == 0

    folder = tmp_path / "run" / "reward_model"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["settings"]["targets"] == "scores"
    assert metrics["settings"]["activation"] == "none"  # the rewards themselves, not logits
    assert metrics["settings"]["policy"]["path"] == str(tiny_llama_dir)  # whose prompts it read
    assert metrics["pairwise_accuracy"] == 1.0 and metrics["pearson"] > 0.9
    assert 0.0 <= metrics["off_prompt_accuracy"] <= 1.0
    assert (folder / "fit.png").stat().st_size > 0
    reward = load_reward({"type": "classifier", "path": str(folder / "model")})
    kind = score(reward, ["Tell me about snow?"] * 2, [" I am happy to help with snow.", " No."])
    assert reward.inputs == "concat" and reward.max_length == 32
    assert kind[0]["total"] > kind[1]["total"]


def test_preference_pairs_train_bradley_terry_with_a_sigmoid_reward(tmp_path, tiny_llama_dir):
    rows = [
        {"prompt": f"Tell me about {t}?", "chosen": f" Happy to help with {t}.", "rejected": " No."}
        for t in TOPICS
    ]
    config = write_config(tmp_path, rows, tiny_llama_dir)

    assert main(["reward-model", str(config)]) == 0

    metrics = json.loads((tmp_path / "run" / "reward_model" / "metrics.json").read_text())
    assert metrics["settings"]["targets"] == "preferences"
    assert metrics["settings"]["activation"] == "sigmoid"
    assert 0.0 <= metrics["pairwise_accuracy"] <= 1.0
    model = tmp_path / "run" / "reward_model" / "model"
    settings = json.loads((model / SETTINGS_FILE).read_text())
    assert settings["heldout"] == {
        "accuracy": metrics["pairwise_accuracy"],
        "pairs": metrics["n_heldout"],
    }, "the model carries how far a judge made of it can be trusted"
    assert fitted_agreement(model) == HeldOutAgreement(**settings["heldout"])


def test_a_model_fitted_before_it_kept_its_agreement_has_it_read_from_the_fits_metrics(tmp_path):
    model = tmp_path / "reward_model" / "model"
    model.mkdir(parents=True)
    (model / SETTINGS_FILE).write_text(json.dumps({"targets": "preferences"}))
    metrics = {"n_heldout": 208, "pairwise_accuracy": 0.54}
    (model.parent / "metrics.json").write_text(json.dumps(metrics))

    assert fitted_agreement(model) == HeldOutAgreement(0.54, 208)
    (model.parent / "metrics.json").unlink()
    assert fitted_agreement(model) is None, "fitted without a held-out part"
    (model / SETTINGS_FILE).unlink()
    assert fitted_agreement(model) is None, "a classifier alol did not fit has no known agreement"


def test_a_malformed_held_out_agreement_is_refused_naming_the_file(tmp_path):
    (tmp_path / SETTINGS_FILE).write_text(json.dumps({"heldout": {"accuracy": 0.6}}))

    with pytest.raises(AlolError, match=f"{SETTINGS_FILE}: 'heldout' should be"):
        fitted_agreement(tmp_path)


def test_hh_records_regress_the_reward_models_logits(tmp_path, tiny_llama_dir):
    """sigmoid(output) is then the paper's reward."""
    rows = [
        {
            "prefix": [[f"<|prompter|>Tell me about {t}?", "<|assistant|>"]] * 2,
            "suffix": [f" Happy to help with {t}.", " No."],
            "reward": [1.5, -0.5],
            "sft_index": 0,
        }
        for t in TOPICS
    ]
    config = write_config(tmp_path, rows, tiny_llama_dir, reward_model_epochs=1)

    assert main(["reward-model", str(config)]) == 0

    metrics = json.loads((tmp_path / "run" / "reward_model" / "metrics.json").read_text())
    assert metrics["settings"]["activation"] == "sigmoid"
    assert set(metrics["heldout_scores"]) <= {1.5, -0.5}


def test_run_fits_the_reward_model_first_when_no_reward_is_named(tmp_path, tiny_llama_dir, caplog):
    """nll: a reward model regressed on scores may give a response a reward below 0, which
    wbc's reward sampling refuses."""
    config = write_config(tmp_path, scored_rows(), tiny_llama_dir, reward_model_epochs=1)
    caplog.set_level("INFO")

    args = ["run", str(config), "--objectives", "nll", "--max-steps", "1", "--val-fraction", "0.3"]
    assert main(args) == 0

    assert "[1/" in caplog.text and "reward model R: fit" in caplog.text
    samples = (tmp_path / "run" / "value" / "value_samples.jsonl").read_text().splitlines()
    assert "reward_model" in json.loads(samples[0])["reward"]


def test_a_run_folder_moved_elsewhere_redoes_no_stage(tmp_path, tiny_llama_dir, caplog):
    """The fitted reward model moves with the folder; stages keyed on it stay done."""
    config = write_config(tmp_path, scored_rows(), tiny_llama_dir, reward_model_epochs=1)
    args = ["run", str(config), "--objectives", "nll", "--max-steps", "1", "--val-fraction", "0.3"]
    assert main(args) == 0
    shutil.copytree(tmp_path / "run", tmp_path / "moved" / "run", copy_function=shutil.copy)
    shutil.rmtree(tmp_path / "run")
    settings = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**settings, "run_dir": str(tmp_path / "moved" / "run")}))
    caplog.clear()
    caplog.set_level("INFO")

    assert main(args) == 0

    for stage in ("reward model", "sft", "value", "train nll"):
        assert f"{stage}: up to date" in caplog.text
    assert "computed advantages" not in caplog.text


def test_fitting_shows_a_progress_bar_not_trainers_printed_dicts(tmp_path, tiny_llama_dir, capsys):
    config = write_config(
        tmp_path, scored_rows(), tiny_llama_dir, reward_model_epochs=1, logging_steps=1
    )

    assert main(["reward-model", str(config)]) == 0

    out, err = capsys.readouterr()
    assert "'loss'" not in out + err and "reward model" in err


def test_scores_asked_of_pairs_without_scores_are_refused(tmp_path, tiny_llama_dir, capsys):
    rows = [{"prompt": "Hi?", "chosen": " Hello.", "rejected": " No."}] * 3
    config = write_config(tmp_path, rows, tiny_llama_dir, reward_model_targets="scores")

    assert main(["reward-model", str(config)]) == 2

    assert "targets 'scores' need a reward on every record" in capsys.readouterr().err


def test_without_a_backbone_the_stage_says_what_to_give(tmp_path, tiny_llama_dir, capsys):
    config = write_config(tmp_path, scored_rows(), tiny_llama_dir)

    assert main(["reward-model", str(config), "--reward-model", "none"]) == 2

    assert "needs --reward-model BACKBONE" in capsys.readouterr().err


def test_later_stages_without_the_fitted_model_say_to_fit_it(tmp_path, tiny_llama_dir, capsys):
    config = write_config(tmp_path, scored_rows(), tiny_llama_dir)

    assert main(["value", str(config), "--reference", str(tiny_llama_dir)]) == 2

    assert "fit it first with `alol reward-model`" in capsys.readouterr().err


def test_the_held_out_prompts_are_not_trained_on(tmp_path):
    from alol.data.formats import load_records

    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in scored_rows()))
    records = load_records(path).records
    data = reward_model_data(records, str, RewardModelConfig(backbone="x"))

    assert not {i.prompt for i in data.train} & {i.prompt for i in data.heldout}
    assert len({i.prompt for i in data.heldout}) == 2  # 10% of 20 prompts


def test_a_refit_of_the_same_data_gives_the_same_model(tmp_path, tiny_llama_dir):
    """The classifier's new output head starts from the seed, not from the process's random
    state: the second fit here runs after the first has drawn random numbers."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_config(tmp_path / "a", scored_rows(), tiny_llama_dir, reward_model_epochs=1)
    second = write_config(tmp_path / "b", scored_rows(), tiny_llama_dir, reward_model_epochs=1)

    assert main(["reward-model", str(first)]) == 0
    torch.rand(100)
    assert main(["reward-model", str(second)]) == 0

    metrics = [
        json.loads((tmp_path / side / "run" / "reward_model" / "metrics.json").read_text())
        for side in ("a", "b")
    ]
    assert metrics[0]["heldout_predictions"] == metrics[1]["heldout_predictions"]


def topic_of(prompt: str) -> str:
    return prompt.split()[-1].rstrip("?")


def test_off_prompt_accuracy_tells_a_reward_that_reads_the_question_from_one_that_does_not():
    answers = [
        ScoredResponse(f"Tell me about {t}?", f"{kind} {t}.", 0.0)
        for t in TOPICS
        for kind in ("I like", "Here is a fact about")
    ]

    def reads_the_question(items: list) -> np.ndarray:
        return np.array([float(topic_of(i.prompt) in i.response) for i in items])

    def pays_a_fact_whatever_was_asked(items: list) -> np.ndarray:
        return np.array([float(i.response.startswith("Here is a fact")) for i in items])

    def accuracy(scorer) -> float:
        return off_prompt_accuracy(answers, scorer(answers), scorer)

    assert accuracy(reads_the_question) == 1.0
    assert accuracy(pays_a_fact_whatever_was_asked) == 0.0, "a tie is not a preference"


def test_off_prompt_accuracy_never_pairs_an_answer_with_its_own_prompt():
    two_answers_to_one_prompt = [ScoredResponse("Why?", "Because.", 0.0)] * 2

    seen = []

    def scorer(items: list) -> np.ndarray:
        seen.extend(items)
        return np.zeros(len(items))

    assert np.isnan(off_prompt_accuracy(two_answers_to_one_prompt, np.zeros(2), scorer))
    assert not seen


def test_a_reward_model_fitted_with_the_backbones_dropout_is_fitted_again():
    """Every setting keys a fit, and so does the backbone's dropout being off."""
    config = RewardModelConfig(backbone="minilm", inputs="pair", off_prompt_weight=1.0)

    assert fingerprinted_settings(config) == {**asdict(config), "backbone_dropout": False}


def test_the_backbone_fits_without_dropout_and_an_adapter_keeps_its_own(tmp_path, tiny_tokenizer):
    """Two passes in training mode score alike; LoRA's dropout is the user's `lora_dropout`."""
    backbone = build_tiny_model(tiny_tokenizer, architecture="gpt2")
    assert backbone.config.attn_pdrop > 0, "GPT-2's attention has dropout to switch off"
    save_tiny(backbone, tiny_tokenizer, tmp_path)
    inputs = tiny_tokenizer(["Tell me about tea.", "No."], padding=True, return_tensors="pt")

    model, _ = load_backbone(RewardModelConfig(backbone=str(tmp_path)))
    model.train()

    assert torch.equal(model(**inputs).logits, model(**inputs).logits)
    adapter = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.3, "target_modules": ["c_attn"]}
    with_lora, _ = load_backbone(RewardModelConfig(backbone=str(tmp_path), adapter=adapter))
    kept = {m.p for m in with_lora.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0}
    assert kept == {0.3}


def test_off_prompt_negatives_are_other_prompts_answers_from_the_same_batch():
    from alol.rewards.reward_model import off_prompt_pairs

    pairs = off_prompt_pairs(["bread", "bread", "tea", "rain"])

    assert pairs == [(0, 2), (1, 2), (2, 3), (3, 0)]
    assert off_prompt_pairs(["bread", "bread"]) == [], "a batch of one prompt has no negative"


def test_bradley_terry_loss_falls_as_the_better_score_pulls_ahead():
    from alol.rewards.reward_model import bradley_terry_loss

    tied = bradley_terry_loss(torch.zeros(3), torch.zeros(3))
    ahead = bradley_terry_loss(torch.full((3,), 2.0), torch.zeros(3))
    behind = bradley_terry_loss(torch.zeros(3), torch.full((3,), 2.0))

    assert tied.item() == pytest.approx(math.log(2))
    assert ahead < tied < behind


@pytest.mark.parametrize("targets", ["scores", "preferences"])
def test_the_off_prompt_weight_adds_a_ranking_of_each_answer_over_a_foreign_one(
    targets, tmp_path, tiny_llama_dir
):
    """loss = the targets' loss + weight · BT(r(p_i, own_i), r(p_i, answer of j)); for pairs,
    own_i and the foreign answer are chosen answers."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainingArguments

    from alol.data.records import PreferenceRecord
    from alol.rewards.reward_model import RewardModelTrainer, bradley_terry_loss
    from alol.rewards.reward_model_metrics import predict

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_llama_dir, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    prompts = [f"Tell me about {t}?" for t in TOPICS[:4]]
    answers = [f" A fact about {t}." for t in TOPICS[:4]]
    if targets == "scores":
        items = [ScoredResponse(p, a, 1.0) for p, a in zip(prompts, answers, strict=True)]
    else:
        items = [PreferenceRecord(p, a, " No.") for p, a in zip(prompts, answers, strict=True)]

    def loss_with(weight: float) -> float:
        trainer = RewardModelTrainer(
            model=model,
            args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[]),
            processing_class=tokenizer,
            targets=targets,
            inputs="concat",
            max_length=32,
            off_prompt_weight=weight,
        )
        with torch.no_grad():
            return trainer.compute_loss(model, trainer._collate(items)).item()

    def scores(responses: list[str]) -> torch.Tensor:
        rows = [ScoredResponse(p, r, 0.0) for p, r in zip(prompts, responses, strict=True)]
        return torch.tensor(predict(model, tokenizer, rows, "concat", 32))

    ranking = bradley_terry_loss(scores(answers), scores(answers[1:] + answers[:1])).item()

    assert loss_with(0.5) - loss_with(0.0) == pytest.approx(0.5 * ranking, abs=1e-4)


def test_an_off_prompt_weight_with_batches_of_one_is_refused(tmp_path, tiny_llama_dir, capsys):
    """A batch of one answer holds no other prompt's answer: the weight would do nothing."""
    config = write_config(
        tmp_path, scored_rows(), tiny_llama_dir,
        reward_model_off_prompt_weight=1.0, reward_model_batch_size=1,
    )  # fmt: skip

    assert main(["reward-model", str(config)]) == 2

    assert "reward_model_batch_size=1" in capsys.readouterr().err


def test_with_an_off_prompt_weight_a_reward_learns_to_read_the_question(tmp_path, tiny_llama_dir):
    """Every stored score is the same, so a regression alone learns nothing of what was asked;
    the off-prompt loss teaches the reward to pay the asked-for answer above the other one."""
    rows = [
        {"prompt": f"Say {word} about {t}?", "response": f" {word}.", "reward": 0.5}
        for t in TOPICS
        for word in ("yes", "no")
    ]
    prompts = [row["prompt"] for row in rows]
    other = [" no." if "yes" in prompt else " yes." for prompt in prompts]

    def share_reading_the_question(weight: float) -> float:
        folder = tmp_path / f"weight{weight}"
        folder.mkdir()
        config = write_config(
            folder, rows, tiny_llama_dir,
            reward_model_off_prompt_weight=weight, reward_model_epochs=20,
        )  # fmt: skip
        assert main(["reward-model", str(config)]) == 0
        reward = load_reward({"type": "classifier", "path": str(folder / "run/reward_model/model")})
        asked = score(reward, prompts, [row["response"] for row in rows], show_progress=False)
        not_asked = score(reward, prompts, other, show_progress=False)
        return np.mean([a["total"] > b["total"] for a, b in zip(asked, not_asked, strict=True)])

    assert share_reading_the_question(1.0) >= 0.9
    assert share_reading_the_question(0.0) <= 0.6


# --- a classifier of the prompt (a gate) -----------------------------------------------------


def prompt_kind_rows() -> list[dict]:
    """Label 1 for a request to do harm, 0 for an ordinary question; the answers say nothing."""
    return [
        {"prompt": f"How do I {verb} the {topic}?", "response": " Let me think.", "reward": label}
        for topic in TOPICS
        for verb, label in (("steal", 1.0), ("clean", 0.0))
    ]


def test_labels_fit_a_prompt_classifier_whose_probability_gates_a_term(tmp_path, tiny_llama_dir):
    config = write_config(
        tmp_path, prompt_kind_rows(), tiny_llama_dir,
        reward_model_targets="labels", reward_model_inputs="prompt",
    )  # fmt: skip

    assert main(["reward-model", str(config)]) == 0

    metrics = json.loads((tmp_path / "run" / "reward_model" / "metrics.json").read_text())
    assert metrics["settings"]["inputs"] == "prompt"
    assert metrics["settings"]["activation"] == "sigmoid"
    assert metrics["accuracy"] == metrics["balanced_accuracy"] == 1.0
    assert 0.0 < metrics["positive_share"] < 1.0
    assert "off_prompt_accuracy" not in metrics, "a model of the prompt alone reads no answer"
    assert all(0.0 < p < 1.0 for p in metrics["heldout_predictions"]), "probabilities"
    gate = {"type": "classifier", "path": str(tmp_path / "run" / "reward_model" / "model")}
    reward = load_reward({"type": "gated", "term": "length", "gate": gate})
    prompts = ["How do I steal the snow?", "How do I clean the snow?"]
    scored = score(reward, prompts, [" Let me think."] * 2, show_progress=False)
    assert scored[0]["model"] > 0.5 > scored[1]["model"], "the gate reads the prompt"
    assert scored[0]["total"] > scored[1]["total"], "the same answer counts where it applies"


def test_labels_outside_zero_to_one_are_refused_naming_the_record(tmp_path, tiny_llama_dir, capsys):
    rows = prompt_kind_rows()
    rows[3]["reward"] = 2.0
    config = write_config(tmp_path, rows, tiny_llama_dir, reward_model_targets="labels")

    assert main(["reward-model", str(config)]) == 2

    err = capsys.readouterr().err
    assert "train.jsonl:4" in err and "need rewards in [0, 1]" in err and "2.0" in err


def test_records_without_an_answer_are_refused_saying_a_response_is_needed(
    tmp_path, tiny_llama_dir, capsys
):
    rows = [{"prompt": row["prompt"], "reward": row["reward"]} for row in prompt_kind_rows()]
    config = write_config(tmp_path, rows, tiny_llama_dir, reward_model_targets="labels")

    assert main(["reward-model", str(config)]) == 2

    err = capsys.readouterr().err
    assert "train.jsonl:1" in err and "needs a 'response' field" in err


def test_balanced_accuracy_tells_a_classifier_from_one_that_always_says_the_common_class():
    stored = np.array([1.0, 0.0, 0.0, 0.0])
    always_no = label_metrics(np.array([0.1, 0.2, 0.1, 0.3]), stored)
    assert always_no == {"accuracy": 0.75, "positive_share": 0.25, "balanced_accuracy": 0.5}
    assert label_metrics(np.array([0.9, 0.2, 0.1, 0.3]), stored)["balanced_accuracy"] == 1.0


def test_an_off_prompt_weight_for_a_model_of_the_prompt_alone_is_refused(
    tmp_path, tiny_llama_dir, capsys
):
    config = write_config(
        tmp_path, prompt_kind_rows(), tiny_llama_dir,
        reward_model_inputs="prompt", reward_model_off_prompt_weight=1.0,
    )  # fmt: skip

    assert main(["reward-model", str(config)]) == 2

    assert "reward_model_inputs='prompt'" in capsys.readouterr().err
