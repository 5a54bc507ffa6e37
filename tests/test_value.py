"""The value head V(x): padding-invariant, bounded, fitted on held-out MSE, saved and reloaded."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from alol.method.value_head import ValueHead, values_from_sequence_states
from alol.models.value_fit import (
    MIN_HELDOUT_PROMPTS,
    fit_value_head,
    fit_warnings,
    head_bound,
    predict_values,
    split_holdout,
)
from alol.models.value_io import (
    CONFIG_FILE,
    METRICS_FILE,
    WEIGHTS_FILE,
    ValueConfig,
    load_value_head,
    save_value_head,
    value_head_model,
)
from alol.reports.metrics import explained_variance, explained_variance_interval
from alol.reports.plots import plot_value_fit

SUBJECTS = ["the dog", "my bread", "a fox", "the question", "your friend", "the water"]
VERBS = ["is", "was", "seems", "looks"]


def word_prompts() -> tuple[list[str], list[float]]:
    """48 prompts whose target is 0.8 when they say 'happy' and 0.2 when they say 'lazy'."""
    prompts, targets = [], []
    for subject in SUBJECTS:
        for verb in VERBS:
            for word, target in (("happy", 0.8), ("lazy", 0.2)):
                prompts.append(f"Human: {subject} {verb} {word} today. Assistant:")
                targets.append(target)
    return prompts, targets


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir), AutoTokenizer.from_pretrained(
        tiny_llama_dir
    )


@pytest.fixture(scope="module")
def fitted(llama):
    """One fit on the learnable word task, shared by the tests that only read it."""
    model, tokenizer = llama
    prompts, targets = word_prompts()
    config = ValueConfig(epochs=8, learning_rate=1e-2, prompt_batch_size=8, holdout_fraction=0.25)
    head, report = fit_value_head(model, tokenizer, prompts, targets, config)
    return head, report, prompts, targets


def random_head(max_value: float | None = 1.0, num_heads: int = 2) -> ValueHead:
    torch.manual_seed(0)
    return ValueHead(hidden_size=8, num_heads=num_heads, max_value=max_value).eval()


# ---------------------------------------------------------------------------------------
# The head on its own


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_padding_does_not_change_the_value(padding_side):
    """A 3-token prompt alone and padded to 6 positions (pads full of large junk) agree."""
    head = random_head()
    prompt = torch.randn(1, 3, 8)
    junk = 100 * torch.randn(1, 3, 8)
    padded = (
        torch.cat([junk, prompt], 1) if padding_side == "left" else torch.cat([prompt, junk], 1)
    )
    real = torch.tensor([[0, 0, 0, 1, 1, 1]] if padding_side == "left" else [[1, 1, 1, 0, 0, 0]])
    other_row = torch.randn(1, 6, 8)
    batch = torch.cat([padded, other_row])
    mask = torch.cat([real, torch.ones(1, 6, dtype=torch.long)])

    alone = head(prompt, torch.ones(1, 3, dtype=torch.long))
    in_batch = head(batch, mask)

    torch.testing.assert_close(in_batch[:1], alone)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_values_of_whole_sequences_pool_over_the_prompt_positions_only(padding_side):
    """Row 0: 2 prompt + 2 response tokens, padded to 5; row 1: 3 + 2, no padding. The response
    and padding states are large junk; V must equal the head on each prompt's states alone."""
    head = random_head()
    prompts = [torch.randn(1, 2, 8), torch.randn(1, 3, 8)]
    junk = 100 * torch.randn(2, 5, 8)
    hidden = junk.clone()
    attention_mask = torch.ones(2, 5, dtype=torch.long)
    response_mask = torch.zeros(2, 5, dtype=torch.bool)
    start = 1 if padding_side == "left" else 0
    attention_mask[0, 4 if padding_side == "right" else 0] = 0
    hidden[0, start : start + 2] = prompts[0][0]
    response_mask[0, start + 2 : start + 4] = True
    hidden[1, :3] = prompts[1][0]
    response_mask[1, 3:] = True

    values = values_from_sequence_states(head, hidden, attention_mask, response_mask)

    alone = torch.cat([head(p, torch.ones(1, p.shape[1], dtype=torch.long)) for p in prompts])
    torch.testing.assert_close(values, alone)


def test_bounded_head_stays_strictly_between_zero_and_max_value():
    head = random_head(max_value=2.5)
    values = head(3 * torch.randn(64, 5, 8), torch.ones(64, 5, dtype=torch.long))
    assert values.shape == (64,)
    assert bool((values > 0).all()) and bool((values < 2.5).all())


def test_bounded_output_is_sigmoid_of_the_linear_output_times_max_value():
    """With a zero weight and bias -1 the linear output is -1: bounded V = 2 · σ(-1) ≈ 0.5379."""
    head = random_head(max_value=2.0)
    with torch.no_grad():
        head.output.weight.zero_()
        head.output.bias.fill_(-1.0)
    value = head(torch.randn(1, 4, 8), torch.ones(1, 4, dtype=torch.long))
    torch.testing.assert_close(value, torch.tensor([2.0 / (1.0 + math.e)]))


def test_unbounded_head_returns_the_linear_output_unchanged():
    """Zero weight, bias -7: the unbounded V is exactly -7, outside any sigmoid range."""
    head = random_head(max_value=None)
    with torch.no_grad():
        head.output.weight.zero_()
        head.output.bias.fill_(-7.0)
    values = head(torch.randn(2, 4, 8), torch.ones(2, 4, dtype=torch.long))
    torch.testing.assert_close(values, torch.tensor([-7.0, -7.0]))


def test_start_at_sets_the_untrained_prediction():
    """The output bias is set so that σ(bias) · 2 = 0.5, i.e. bias = logit(0.25)."""
    head = random_head(max_value=2.0)
    with torch.no_grad():
        head.output.weight.zero_()
    head.start_at(0.5)
    value = head(torch.randn(1, 3, 8), torch.ones(1, 3, dtype=torch.long))
    torch.testing.assert_close(value, torch.tensor([0.5]))


def test_a_prompt_without_real_tokens_is_rejected():
    head = random_head()
    with pytest.raises(ValueError, match="at least one real token"):
        head(torch.randn(1, 3, 8), torch.zeros(1, 3, dtype=torch.long))


def test_num_heads_must_divide_the_hidden_size():
    with pytest.raises(ValueError, match="does not divide the hidden size 8"):
        ValueHead(hidden_size=8, num_heads=3)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("holdout_fraction", 1.0, "holdout_fraction"),
        ("max_value", 0.0, "None for rewards without a known range"),
        ("feature_dtype", "int8", "feature_dtype"),
        ("epochs", 0, "epochs"),
    ],
)
def test_invalid_config_says_which_field_is_wrong(field, value, message):
    with pytest.raises(ValueError, match=message):
        ValueConfig(**{field: value})


# ---------------------------------------------------------------------------------------
# Prompts through the frozen reference


def test_a_prompt_gets_the_same_value_alone_and_in_a_padded_batch(tiny_model_dir):
    """Batched with longer and shorter prompts (so it is padded, and others are), V is unchanged."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    head = ValueHead(model.config.hidden_size, num_heads=4).eval()
    prompt = "Human: How do I bake bread? Assistant:"
    others = ["Hi", "Numbers like 1 2 3 4 5 6 7 8 9 10 appear in text too, " * 3, ""]

    alone = predict_values(model, tokenizer, head, [prompt])
    batched = predict_values(model, tokenizer, head, [*others, prompt], batch_size=4)

    torch.testing.assert_close(batched[-1], alone[0], rtol=1e-5, atol=1e-5)


def test_predictions_are_deterministic_and_leave_the_models_mode_alone(llama):
    """Dropout-carrying modules in train mode still predict identically, and stay in train mode."""
    model, tokenizer = llama
    torch.manual_seed(0)
    head = ValueHead(model.config.hidden_size, num_heads=1)
    model.train()
    head.train()
    prompts, _ = word_prompts()

    first = predict_values(model, tokenizer, head, prompts[:8], batch_size=3)
    second = predict_values(model, tokenizer, head, prompts[:8], batch_size=3)

    assert first == second
    assert model.training and head.training
    model.eval()


def test_a_peft_wrapped_reference_is_read_through_its_adapters(llama):
    """A fresh LoRA adapter is a no-op (B = 0): the same V as the bare model. A trained one is not."""
    model, tokenizer = llama
    torch.manual_seed(0)
    head = ValueHead(model.config.hidden_size).eval()
    prompts = ["Please be kind", "The quick brown fox"]
    bare = predict_values(model, tokenizer, head, prompts)

    wrapped = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model.name_or_path),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"]),
    )
    torch.testing.assert_close(predict_values(wrapped, tokenizer, head, prompts), bare)

    with torch.no_grad():
        for name, parameter in wrapped.named_parameters():
            if "lora_B" in name:
                parameter.fill_(0.5)
    assert predict_values(wrapped, tokenizer, head, prompts) != bare


# ---------------------------------------------------------------------------------------
# Fitting


def test_fitting_learns_a_target_that_depends_on_a_word(fitted):
    """Always predicting the mean 0.5 would score MSE 0.09 (= 0.3²); the fit must do far better."""
    _, report, _, _ = fitted
    assert report["n_train"] == 36 and report["n_heldout"] == 12
    assert report["heldout_mse"] < 0.02
    assert report["pearson"] > 0.8 and report["spearman"] > 0.5
    assert report["explained_variance"] > 0.7
    assert len(report["train_mse_per_epoch"]) == len(report["heldout_mse_per_epoch"]) == 8


def test_hidden_states_at_a_pretrained_models_scale_do_not_saturate_the_head(tiny_llama_dir):
    """SmolLM2's last hidden states reach ~50. At that scale the first Adam steps used to drive
    the sigmoid into saturation, where it stayed: V(x) = 0 for every prompt, A = R."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    with torch.no_grad():
        model.model.norm.weight.mul_(100.0)
    prompts, targets = word_prompts()
    config = ValueConfig(epochs=8, prompt_batch_size=8, holdout_fraction=0.25)

    head, report = fit_value_head(model, tokenizer, prompts, targets, config)

    values = predict_values(model, tokenizer, head, prompts)
    assert min(values) > 0.05 and max(values) < 0.95
    assert report["train_mse"] < 0.09  # better than the constant mean 0.5 (MSE 0.3²)


def test_the_fitted_head_is_returned_in_eval_mode(fitted):
    head, _, _, _ = fitted
    assert not head.training


def test_the_kept_epoch_has_the_lowest_heldout_mse_and_its_weights_are_returned(fitted, llama):
    """On this seed the held-out curve rises again in the last epoch (≈0.004 at epoch 7, ≈0.017
    at epoch 8), so returning the last weights would fail; the head must reproduce the minimum."""
    head, report, prompts, targets = fitted
    model, tokenizer = llama
    curve = report["heldout_mse_per_epoch"]
    assert report["best_epoch"] == curve.index(min(curve)) + 1
    assert report["best_epoch"] < len(curve), "precondition: the curve must not end at its minimum"
    assert report["heldout_mse"] == min(curve)
    assert report["train_mse"] == report["train_mse_per_epoch"][report["best_epoch"] - 1]

    heldout = report["heldout_indices"]
    values = predict_values(model, tokenizer, head, [prompts[i] for i in heldout])
    mse = sum((v - targets[i]) ** 2 for v, i in zip(values, heldout, strict=True)) / len(heldout)
    assert mse == pytest.approx(min(curve), rel=1e-3)


def test_the_same_seed_gives_the_same_fit(llama):
    model, tokenizer = llama
    prompts, targets = word_prompts()
    config = ValueConfig(epochs=2, prompt_batch_size=16, seed=3)
    _, first = fit_value_head(model, tokenizer, prompts[:16], targets[:16], config)
    _, second = fit_value_head(model, tokenizer, prompts[:16], targets[:16], config)
    assert first["heldout_mse_per_epoch"] == second["heldout_mse_per_epoch"]
    assert first["heldout_indices"] == second["heldout_indices"]


def test_two_examples_still_hold_one_out_and_constant_targets_give_nan_correlations(llama):
    """With 2 prompts and 10% held out, round(0.2) = 0 is raised to 1; one held-out point has no
    correlation, so Pearson, Spearman and explained variance are NaN rather than an error."""
    model, tokenizer = llama
    _, report = fit_value_head(
        model, tokenizer, ["Hi", "Please be kind"], [0.5, 0.5], ValueConfig(epochs=1)
    )
    assert (report["n_train"], report["n_heldout"]) == (1, 1)
    assert math.isnan(report["pearson"]) and math.isnan(report["spearman"])
    assert math.isnan(report["explained_variance"])


def test_mismatched_prompts_and_targets_are_rejected(llama):
    model, tokenizer = llama
    with pytest.raises(ValueError, match="2 prompts but 1 targets"):
        fit_value_head(model, tokenizer, ["a", "b"], [0.1], ValueConfig(epochs=1))


# ---------------------------------------------------------------------------------------
# Saving, loading, plotting


def test_save_and_load_round_trip_gives_identical_predictions(fitted, llama, tmp_path):
    head, report, prompts, _ = fitted
    model, tokenizer = llama
    made_for = {"path": "models/ref", "fingerprint": "f" * 64}
    save_value_head(head, tmp_path, report, made_for)

    loaded = load_value_head(tmp_path)

    assert not loaded.training
    assert predict_values(model, tokenizer, loaded, prompts) == predict_values(
        model, tokenizer, head, prompts
    )
    shape = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert shape == {
        "hidden_size": model.config.hidden_size,
        "num_heads": 1,
        "max_value": 1.0,
        "dropout": 0.0,
        "model": made_for,
    }
    assert value_head_model(tmp_path) == made_for
    metrics = json.loads((tmp_path / METRICS_FILE).read_text())
    assert metrics["best_epoch"] == report["best_epoch"]


def test_nan_metrics_are_saved_as_null(tmp_path):
    save_value_head(random_head(), tmp_path, {"pearson": float("nan"), "curve": [float("nan")]})
    assert json.loads((tmp_path / METRICS_FILE).read_text()) == {"pearson": None, "curve": [None]}


def test_an_unbounded_head_round_trips(tmp_path):
    head = random_head(max_value=None)
    save_value_head(head, tmp_path)
    loaded = load_value_head(tmp_path)
    hidden, mask = torch.randn(3, 4, 8), torch.ones(3, 4, dtype=torch.long)
    assert loaded.max_value is None
    torch.testing.assert_close(loaded(hidden, mask), head(hidden, mask))


def test_a_corrupt_weights_file_names_the_file_and_how_to_recover(tmp_path):
    save_value_head(random_head(), tmp_path)
    (tmp_path / WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="rerun `alol value`") as error:
        load_value_head(tmp_path)
    assert str(tmp_path / WEIGHTS_FILE) in str(error.value)


def test_a_corrupt_config_file_names_the_file(tmp_path):
    save_value_head(random_head(), tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{")
    with pytest.raises(ValueError, match=CONFIG_FILE):
        load_value_head(tmp_path)


def test_a_missing_value_head_says_to_run_alol_value(tmp_path):
    with pytest.raises(FileNotFoundError, match="Run `alol value`") as error:
        load_value_head(tmp_path)
    assert CONFIG_FILE in str(error.value)


def test_plot_value_fit_writes_a_png(fitted, tmp_path):
    _, report, _, _ = fitted
    path = plot_value_fit(report, tmp_path / "value_fit.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["value_fit.png"]


def test_the_held_out_split_keeps_every_sample_of_a_prompt_on_one_side():
    """k = 3 samples per prompt (value_samples 3): a prompt on both sides would let the head
    be scored on a prompt it trained on."""
    prompts = [f"prompt {i}" for i in range(10) for _ in range(3)]

    train, heldout = split_holdout(prompts, holdout_fraction=0.3, seed=0)

    assert sorted(train + heldout) == list(range(30))
    assert not {prompts[i] for i in train} & {prompts[i] for i in heldout}
    assert len({prompts[i] for i in heldout}) == 3


def test_a_bound_below_the_rewards_is_refused_and_auto_leaves_such_rewards_unbounded():
    rewards = [0.1, 0.5, 2.0]
    with pytest.raises(ValueError, match=r"span \[0.1, 2\].*bounded to \(0, 1\).*at least 2"):
        head_bound(1.0, rewards)
    assert head_bound("auto", rewards) is None
    assert head_bound("auto", [0.0, 0.4, 1.0]) == 1.0
    assert head_bound("auto", [-0.5, 0.5]) is None
    assert head_bound(None, rewards) is None
    assert head_bound(2.5, rewards) == 2.5


def test_fitting_rewards_above_one_gives_an_unbounded_head(llama):
    model, tokenizer = llama
    prompts, targets = word_prompts()
    head, report = fit_value_head(
        model, tokenizer, prompts, [2 * t for t in targets], ValueConfig(epochs=1)
    )
    assert head.max_value is None and report["max_value"] is None


def test_a_fit_too_small_or_flat_to_trust_says_so_once(llama, caplog):
    model, tokenizer = llama
    with caplog.at_level("WARNING", logger="alol.models.value_fit"):
        _, report = fit_value_head(
            model, tokenizer, ["Hi", "Please be kind", "Bread?"], [0.5] * 3, ValueConfig(epochs=1)
        )
    assert any("too few to judge the fit" in w for w in report["warnings"])
    assert any("every value target (reward) is the same" in w for w in report["warnings"])
    assert caplog.text.count("too few to judge the fit") == 1


def test_a_fit_on_too_few_held_out_prompts_gives_no_interval(llama):
    """Resampled from the demo's eight held-out prompts, the interval ran from −314.92 to
    −0.05: it repeats in figures what the too-few warning says, so it is left out."""
    model, tokenizer = llama
    prompts, targets = word_prompts()
    config = ValueConfig(epochs=1)

    _, few = fit_value_head(model, tokenizer, prompts[:40], targets[:40], config)
    _, enough = fit_value_head(
        model, tokenizer, prompts, targets, replace(config, holdout_fraction=0.25)
    )

    assert 2 <= few["n_heldout_prompts"] < MIN_HELDOUT_PROMPTS
    assert few["explained_variance_interval"] is None
    assert enough["n_heldout_prompts"] >= MIN_HELDOUT_PROMPTS
    assert enough["explained_variance_interval"] is not None


def test_a_fit_no_better_than_a_constant_is_flagged():
    """The smollm2 demo's fit had a held-out explained variance of -0.43."""
    report = {"n_heldout_prompts": 40, "targets_constant": False, "explained_variance": -0.43}
    (warning,) = fit_warnings(report)
    assert "explained variance is -0.43" in warning and "no better than a constant" in warning
    assert fit_warnings({**report, "explained_variance": 0.3}) == []


def test_a_fit_whose_interval_reaches_zero_says_v_may_be_no_better_than_a_constant():
    """Seed 1 of the HH benchmark: 0.18 on 20 held-out prompts, 95% interval −0.45 to 0.63."""
    report = {
        "n_heldout_prompts": 20,
        "targets_constant": False,
        "explained_variance": 0.18,
        "explained_variance_interval": [-0.45, 0.63],
    }

    (warning,) = fit_warnings(report)

    assert "its 95% interval over the 20 held-out prompts runs from -0.45 to 0.63" in warning
    assert "may predict π_ref's reward no better than a constant" in warning
    assert fit_warnings({**report, "explained_variance_interval": [0.24, 0.72]}) == []
    assert fit_warnings({**report, "explained_variance_interval": None}) == []


def test_the_explained_variance_interval_resamples_prompts_and_narrows_with_more_of_them():
    rng = np.random.default_rng(1)
    targets = rng.normal(size=400)
    predictions = 0.7 * targets + rng.normal(scale=0.5, size=400)

    few = explained_variance_interval(predictions[:20], targets[:20])
    many = explained_variance_interval(predictions, targets)

    assert few[0] < explained_variance(predictions[:20], targets[:20]) < few[1]
    assert many[1] - many[0] < (few[1] - few[0]) / 2
    twice = np.repeat(np.arange(20), 2)  # each prompt's answer twice: 20 prompts, not 40 rows
    grouped = explained_variance_interval(predictions[twice], targets[twice], list(twice))
    assert grouped == pytest.approx(few), "no narrower than the 20 prompts it holds"
    assert explained_variance_interval(predictions[:1], targets[:1]) is None


def test_dropout_acts_while_fitting_and_never_when_values_are_read():
    head = ValueHead(hidden_size=8, num_heads=2, dropout=0.5)
    hidden, mask = torch.randn(4, 3, 8), torch.ones(4, 3, dtype=torch.long)
    head.train()
    assert not torch.equal(head(hidden, mask), head(hidden, mask))
    head.eval()
    torch.testing.assert_close(head(hidden, mask), head(hidden, mask))
