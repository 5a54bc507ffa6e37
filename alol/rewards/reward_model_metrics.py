"""How well a fitted reward model agrees with held-out data: its raw outputs, the figures that
judge a fit for each kind of target, and off-prompt accuracy, which tells a reward that reads
the question from one that pays fluent text whatever was asked."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from alol.models.reference import prompt_groups
from alol.reports.metrics import pearson, spearman
from alol.rewards.classifier import encode_for_classifier
from alol.rewards.reward_model import READS_BOTH, RewardModelData, ScoredResponse


@torch.inference_mode()
def predict(model, tokenizer, items: list, inputs: str, max_length: int, batch_size: int = 64):
    """The model's raw output for each (prompt, response) of `items`."""
    device = next(model.parameters()).device
    model.eval()
    outputs: list[float] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        batch = encode_for_classifier(
            tokenizer, [i.prompt for i in chunk], [i.response for i in chunk], inputs, max_length
        ).to(device)
        outputs += model(**batch).logits[:, 0].float().tolist()
    return np.array(outputs)


def off_prompt_accuracy(
    items: list[ScoredResponse], own: np.ndarray, scorer: Callable[[list], np.ndarray]
) -> float:
    """The share of `items` whose answer (scored `own`) `scorer` puts above another prompt's
    answer given to the same prompt; a tie is not a preference. Near 1, the reward reads the
    question; near 0.5, it pays text whatever was asked, and a policy can answer off topic."""
    half = len(items) // 2
    pairs = [(i, (i + half) % len(items)) for i in range(len(items))]
    pairs = [(i, j) for i, j in pairs if items[i].prompt != items[j].prompt]
    if not pairs:
        return math.nan
    foreign = scorer([ScoredResponse(items[i].prompt, items[j].response, 0.0) for i, j in pairs])
    return float(np.mean([own[i] > f for (i, _), f in zip(pairs, foreign, strict=True)]))


def heldout_metrics(model, tokenizer, data: RewardModelData, inputs: str, max_length: int) -> dict:
    """MSE, Pearson and Spearman against stored scores (scores, labels: the predicted
    probability); for labels, `label_metrics`; pairwise accuracy: the share of held-out
    pairs the model orders as the data does (ties in the data left out); and
    `off_prompt_accuracy` over the held-out answers (the chosen ones of pairs), for a model
    that reads prompt and response together."""
    if not data.heldout:
        return {"n_heldout": 0}

    def scorer(items: list) -> np.ndarray:
        return predict(model, tokenizer, items, inputs, max_length)

    if data.targets == "preferences":
        chosen_items = [ScoredResponse(p.prompt, p.chosen, 0) for p in data.heldout]
        chosen = scorer(chosen_items)
        rejected = scorer([ScoredResponse(p.prompt, p.rejected, 0) for p in data.heldout])
        return {
            "n_heldout": len(data.heldout),
            "pairwise_accuracy": float(np.mean(chosen > rejected)),
            "off_prompt_accuracy": off_prompt_accuracy(chosen_items, chosen, scorer),
        }
    predicted = scorer(data.heldout)
    labels = data.targets == "labels"
    if labels:
        predicted = 1.0 / (1.0 + np.exp(-predicted))
    stored = np.array([item.score for item in data.heldout])
    right, pairs = 0, 0
    for group in prompt_groups([item.prompt for item in data.heldout]):
        for a in group:
            for b in group:
                if stored[a] > stored[b]:
                    pairs += 1
                    right += predicted[a] > predicted[b]
    return {
        "n_heldout": len(data.heldout),
        "mse": float(np.mean((predicted - stored) ** 2)),
        "stored_variance": float(np.var(stored)),
        "pearson": pearson(predicted, stored),
        "spearman": spearman(predicted, stored),
        "pairwise_accuracy": right / pairs if pairs else math.nan,
        "pairs": pairs,
        **(label_metrics(predicted, stored) if labels else {}),
        **(
            {"off_prompt_accuracy": off_prompt_accuracy(data.heldout, predicted, scorer)}
            if inputs in READS_BOTH
            else {}
        ),
        "heldout_predictions": predicted.tolist(),
        "heldout_scores": stored.tolist(),
    }


def label_metrics(predicted: np.ndarray, stored: np.ndarray) -> dict:
    """Accuracy at 0.5, beside the share of positives it is to beat, and the balanced
    accuracy (the mean of the two classes' recalls), which always answering one class holds
    at 0.5 however rare the other class is."""
    said, truth = predicted > 0.5, stored > 0.5
    recalls = [
        float(np.mean(said[truth == side] == side))
        for side in (True, False)
        if (truth == side).any()
    ]
    return {
        "accuracy": float(np.mean(said == truth)),
        "positive_share": float(np.mean(truth)),
        "balanced_accuracy": float(np.mean(recalls)),
    }
