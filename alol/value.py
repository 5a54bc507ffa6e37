"""V(x): the expected reward of the frozen reference policy on a prompt.

A small head on top of the reference's last-layer hidden states of the prompt: a learned
query attends over the prompt positions (padding masked out), then a linear layer, then
`sigmoid · max_value` (or the raw linear output when the reward range is unknown).

The reference is run exactly once over the value prompts; its hidden states are kept on the
CPU, so the head trains for many epochs at the cost of a tiny attention layer per step.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from alol.data import encode_prompt
from alol.io import atomic_path, gather_in_order, write_json

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "value_head.safetensors"
CONFIG_FILE = "value_head.json"
METRICS_FILE = "value_metrics.json"
FEATURE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class ValueConfig:
    """How the value head is fitted; the defaults follow the A-LoL paper's setup."""

    epochs: int = 10
    """Passes over the training prompts; the epoch with the lowest held-out MSE is kept."""
    learning_rate: float = 1e-3
    """Adam learning rate of the head (the reference is frozen)."""
    batch_size: int = 16
    """Prompts per batch, both for the reference's forward pass and for the head's steps."""
    num_heads: int = 1
    """Attention heads of the pooling query; must divide the reference's hidden size."""
    max_value: float | None = 1.0
    """Upper bound of V (output is `sigmoid · max_value`); None = unbounded linear output."""
    holdout_fraction: float = 0.1
    """Share of the prompts held out to pick the best epoch (at least one when n >= 2)."""
    seed: int = 0
    """Seeds the held-out split, the head's initialisation and the batch order."""
    max_prompt_length: int = 640
    """Prompts longer than this many tokens keep their last tokens (as training data does)."""
    feature_dtype: str = "float16"
    """CPU storage of the cached hidden states: float16 halves memory, float32 is exact."""

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"ValueConfig.epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"ValueConfig.batch_size must be >= 1, got {self.batch_size}")
        if self.max_prompt_length < 1:
            raise ValueError(
                f"ValueConfig.max_prompt_length must be >= 1, got {self.max_prompt_length}"
            )
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(
                f"ValueConfig.holdout_fraction must be in [0, 1), got {self.holdout_fraction}"
            )
        if self.max_value is not None and self.max_value <= 0:
            raise ValueError(
                f"ValueConfig.max_value must be positive, got {self.max_value}; "
                "use None for rewards without a known range"
            )
        if self.feature_dtype not in FEATURE_DTYPES:
            raise ValueError(
                f"ValueConfig.feature_dtype must be one of {sorted(FEATURE_DTYPES)}, "
                f"got {self.feature_dtype!r}"
            )


class ValueHead(nn.Module):
    """Attention pooling over the prompt's hidden states, then a scalar value.

    The pooling has no positional terms, so it only sees *which* hidden states are real, never
    where they sit: left and right padding give the same value.
    """

    def __init__(self, hidden_size: int, num_heads: int = 1, max_value: float | None = 1.0):
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(
                f"num_heads={num_heads} does not divide the hidden size {hidden_size}; "
                "choose a divisor (1 always works)"
            )
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.max_value = max_value
        self.query = nn.Parameter(torch.randn(1, 1, hidden_size) * 0.02)
        self.attention = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.output = nn.Linear(hidden_size, 1)

    def forward(self, hidden_states: Tensor, attention_mask: Tensor) -> Tensor:
        """`hidden_states` [B, L, H] and `attention_mask` [B, L] (1 = real token) -> V [B]."""
        is_padding = attention_mask == 0
        # A row of padding only would attend to nothing and silently produce NaN.
        # (.all() is a device sync: a negligible cost next to the reference's forward pass.)
        if is_padding.all(dim=1).any():
            raise ValueError("every prompt needs at least one real token in attention_mask")
        query = self.query.expand(hidden_states.shape[0], -1, -1)
        pooled, _ = self.attention(
            query, hidden_states, hidden_states, key_padding_mask=is_padding, need_weights=False
        )
        logit = self.output(pooled[:, 0]).squeeze(-1)
        if self.max_value is None:
            return logit
        return torch.sigmoid(logit) * self.max_value

    def start_at(self, value: float) -> None:
        """Set the output bias so an untrained head predicts about `value` everywhere.

        Starting at the mean target skips the epochs a head would otherwise spend learning it.
        """
        if self.max_value is not None:
            fraction = min(max(value / self.max_value, 1e-4), 1 - 1e-4)
            value = math.log(fraction / (1 - fraction))
        with torch.no_grad():
            self.output.bias.fill_(value)


# ----------------------------------------------------------------------------------------
# Features: the frozen reference's last-layer hidden states of each prompt


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Switch off dropout for the block, then restore the caller's train/eval mode."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def _backbone(model: nn.Module) -> nn.Module:
    """The transformer body without the LM head (skips the [L, vocab] logits we don't need).

    A peft model is unwrapped to its base model; its adapters stay in place and active.
    """
    if isinstance(model, PeftModel):
        model = model.get_base_model()
    return model.base_model


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _pad_right(rows: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    length = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, : len(row)] = 1
    return input_ids, attention_mask


@torch.no_grad()
def _hidden_state_batches(
    model: nn.Module,
    tokenizer,
    prompts: list[str],
    batch_size: int,
    max_prompt_length: int,
    show_progress: bool = False,
) -> Iterator[tuple[list[int], Tensor, Tensor]]:
    """Yield (prompt indices, hidden states [B, L, H], attention mask [B, L]) batches.

    Prompts are sorted longest first, so batches carry little padding and an out-of-memory
    error shows up on the first batch rather than the last. Right padding keeps every real
    token at its usual position, so a causal model computes the same states as unpadded.
    """
    token_ids = [encode_prompt(tokenizer, p, max_prompt_length) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(token_ids[i]))
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    backbone = _backbone(model)
    device = _device_of(model)
    starts = range(0, len(order), batch_size)
    with _eval_mode(model):
        for start in tqdm(starts, desc="value features", disable=not show_progress):
            indices = order[start : start + batch_size]
            input_ids, attention_mask = _pad_right([token_ids[i] for i in indices], pad_id)
            attention_mask = attention_mask.to(device)
            outputs = backbone(
                input_ids=input_ids.to(device), attention_mask=attention_mask, use_cache=False
            )
            yield indices, outputs.last_hidden_state, attention_mask


def prompt_features(
    model: nn.Module,
    tokenizer,
    prompts: list[str],
    batch_size: int = 16,
    max_prompt_length: int = 640,
    dtype: torch.dtype = torch.float32,
) -> list[Tensor]:
    """Each prompt's last-layer hidden states, [prompt_tokens, H] on the CPU, in prompt order.

    Memory cost: prompt_tokens × H × bytes(dtype) per prompt (a 640-token prompt of a
    4096-wide model is 5 MiB in float16).
    """
    features: list[Tensor | None] = [None] * len(prompts)
    for indices, hidden, mask in _hidden_state_batches(
        model, tokenizer, prompts, batch_size, max_prompt_length
    ):
        lengths = mask.sum(dim=1).tolist()
        hidden = hidden.to("cpu", dtype)
        for row, (index, length) in enumerate(zip(indices, lengths, strict=True)):
            features[index] = hidden[row, :length].clone()
    return features


def _pad_features(features: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Stack [len_i, H] features into [B, L, H] float32 (zeros after each row) and a mask."""
    length = max(f.shape[0] for f in features)
    hidden = torch.zeros(len(features), length, features[0].shape[1])
    mask = torch.zeros(len(features), length, dtype=torch.long)
    for i, f in enumerate(features):
        hidden[i, : f.shape[0]] = f.float()
        mask[i, : f.shape[0]] = 1
    return hidden, mask


# ----------------------------------------------------------------------------------------
# Fitting


def split_holdout(n: int, holdout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (train, held-out) indices; at least one held out when n >= 2 and fraction > 0."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_heldout = 0
    if n >= 2 and holdout_fraction > 0:
        n_heldout = min(max(1, round(n * holdout_fraction)), n - 1)
    return sorted(order[n_heldout:]), sorted(order[:n_heldout])


def _batches(indices: list[int], batch_size: int) -> Iterator[list[int]]:
    for start in range(0, len(indices), batch_size):
        yield indices[start : start + batch_size]


@torch.no_grad()
def _predict_features(
    head: ValueHead, features: list[Tensor], indices: list[int], batch_size: int
) -> Tensor:
    device = _device_of(head)
    predictions = []
    with _eval_mode(head):
        for batch in _batches(indices, batch_size):
            hidden, mask = _pad_features([features[i] for i in batch])
            predictions.append(head(hidden.to(device), mask.to(device)).cpu())
    return torch.cat(predictions) if predictions else torch.zeros(0)


def _mse(
    head: ValueHead, features: list[Tensor], targets: Tensor, indices: list[int], batch_size: int
) -> float:
    if not indices:
        return float("nan")
    predictions = _predict_features(head, features, indices, batch_size)
    return torch.mean((predictions - targets[indices]) ** 2).item()


def _train_one_epoch(
    head: ValueHead,
    optimizer: torch.optim.Optimizer,
    features: list[Tensor],
    targets: Tensor,
    train_indices: list[int],
    batch_size: int,
    generator: torch.Generator,
) -> None:
    device = _device_of(head)
    head.train()
    shuffled = [train_indices[i] for i in torch.randperm(len(train_indices), generator=generator)]
    for batch in _batches(shuffled, batch_size):
        hidden, mask = _pad_features([features[i] for i in batch])
        predictions = head(hidden.to(device), mask.to(device))
        loss = nn.functional.mse_loss(predictions, targets[batch].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN when there are < 2 points or either side is constant."""
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the ranks (ties share their average rank)."""
    return _pearson(pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy())


def _explained_variance(predictions: np.ndarray, targets: np.ndarray) -> float:
    """1 − Var(target − prediction) / Var(target): 1 is perfect, 0 is no better than a constant."""
    if len(targets) < 2 or np.var(targets) == 0:
        return float("nan")
    return float(1 - np.var(targets - predictions) / np.var(targets))


def _check_fit_inputs(prompts: list[str], targets: list[float], max_value: float | None) -> None:
    if len(prompts) != len(targets):
        raise ValueError(
            f"got {len(prompts)} prompts but {len(targets)} targets; pass one target per prompt"
        )
    if not prompts:
        raise ValueError("no value data: pass at least one (prompt, target) pair")
    for i, target in enumerate(targets):
        if not math.isfinite(target):
            raise ValueError(f"target {i} is {target}; every value target must be a finite number")
    if max_value is not None and not all(0 <= t <= max_value for t in targets):
        logger.warning(
            "value targets span [%.4g, %.4g] but the head's output is bounded to (0, %g); "
            "set max_value to the reward's upper bound, or None for an unbounded head",
            min(targets),
            max(targets),
            max_value,
        )


def fit_value_head(
    model: nn.Module,
    tokenizer,
    prompts: list[str],
    targets: list[float],
    config: ValueConfig | None = None,
) -> tuple[ValueHead, dict[str, Any]]:
    """Fit V(x) ≈ target on the frozen `model`'s prompt hidden states.

    `prompts` are rendered prompt strings; `targets` are the rewards of the reference's own
    responses to them. Returns the head from the epoch with the lowest held-out MSE (training
    MSE when nothing is held out), in eval mode on the model's device, and a report of the fit.
    """
    config = config or ValueConfig()
    _check_fit_inputs(prompts, targets, config.max_value)
    # Under several processes each runs the reference on its share of the prompts; all of them
    # then fit the same head on the gathered features (cheap), and the caller saves one.
    features = gather_in_order(
        len(prompts),
        lambda indices: prompt_features(
            model,
            tokenizer,
            [prompts[i] for i in indices],
            config.batch_size,
            config.max_prompt_length,
            FEATURE_DTYPES[config.feature_dtype],
        ),
    )
    feature_bytes = sum(f.numel() * f.element_size() for f in features)
    logger.info(
        "cached reference features of %d prompts (%.1f MiB on CPU)",
        len(prompts),
        feature_bytes / 2**20,
    )

    target_tensor = torch.tensor(targets, dtype=torch.float32)
    train_indices, heldout_indices = split_holdout(
        len(prompts), config.holdout_fraction, config.seed
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        head = ValueHead(features[0].shape[1], config.num_heads, config.max_value)
    head.start_at(target_tensor[train_indices].mean().item())
    head.to(_device_of(model))
    optimizer = torch.optim.Adam(head.parameters(), lr=config.learning_rate)
    generator = torch.Generator().manual_seed(config.seed)

    train_curve: list[float] = []
    heldout_curve: list[float] = []
    best_epoch, best_score, best_state = 0, math.inf, copy.deepcopy(head.state_dict())
    for epoch in range(1, config.epochs + 1):
        _train_one_epoch(
            head, optimizer, features, target_tensor, train_indices, config.batch_size, generator
        )
        train_curve.append(_mse(head, features, target_tensor, train_indices, config.batch_size))
        heldout_curve.append(
            _mse(head, features, target_tensor, heldout_indices, config.batch_size)
        )
        logger.info(
            "value epoch %d/%d: train MSE %.5f, held-out MSE %.5f",
            epoch,
            config.epochs,
            train_curve[-1],
            heldout_curve[-1],
        )
        score = heldout_curve[-1] if heldout_indices else train_curve[-1]
        if score < best_score:
            best_epoch, best_score, best_state = epoch, score, copy.deepcopy(head.state_dict())
    if best_epoch == 0:
        raise FloatingPointError(
            "the value head's MSE was not finite in any epoch; lower ValueConfig.learning_rate"
        )

    head.load_state_dict(best_state)
    head.eval()
    heldout_predictions = _predict_features(
        head, features, heldout_indices, config.batch_size
    ).numpy()
    heldout_targets = target_tensor[heldout_indices].numpy()
    report = {
        "train_mse": train_curve[best_epoch - 1],
        "heldout_mse": heldout_curve[best_epoch - 1],
        "best_epoch": best_epoch,
        "pearson": _pearson(heldout_predictions, heldout_targets),
        "spearman": _spearman(heldout_predictions, heldout_targets),
        "explained_variance": _explained_variance(heldout_predictions, heldout_targets),
        "n_train": len(train_indices),
        "n_heldout": len(heldout_indices),
        "train_mse_per_epoch": train_curve,
        "heldout_mse_per_epoch": heldout_curve,
        "heldout_indices": heldout_indices,
        "heldout_predictions": heldout_predictions.tolist(),
        "heldout_targets": heldout_targets.tolist(),
        "config": asdict(config),
    }
    logger.info(
        "value head: best epoch %d, held-out MSE %.5f, Pearson %.3f, explained variance %.3f",
        best_epoch,
        report["heldout_mse"],
        report["pearson"],
        report["explained_variance"],
    )
    return head, report


def predict_values(
    model: nn.Module,
    tokenizer,
    head: ValueHead,
    prompts: list[str],
    batch_size: int = 16,
    max_prompt_length: int = 640,
    show_progress: bool = False,
) -> list[float]:
    """V(x) for each rendered prompt, in order; deterministic (both modules in eval mode)."""
    values = [0.0] * len(prompts)
    head_device = _device_of(head)
    with _eval_mode(head), torch.no_grad():
        for indices, hidden, mask in _hidden_state_batches(
            model, tokenizer, prompts, batch_size, max_prompt_length, show_progress
        ):
            batch_values = head(hidden.to(head_device, torch.float32), mask.to(head_device))
            for index, value in zip(indices, batch_values.tolist(), strict=True):
                values[index] = value
    return values


@torch.no_grad()
def values_from_sequence_states(
    head: ValueHead, hidden_states: Tensor, attention_mask: Tensor, response_mask: Tensor
) -> Tensor:
    """V(x) `[B]` of a batch of (prompt, response) sequences, from the reference's hidden states
    `[B, L, H]` of the whole sequences, padded on either side (float32, on the head's device).

    Under causal attention, with positions counted from the attention mask, a prompt position's
    state does not depend on the response, so these equal `predict_values` on the prompts alone
    (up to float rounding) without a second forward pass. The head pools over the prompt
    positions only, and its pooling ignores where they sit, so padding side does not matter.
    """
    prompt_mask = attention_mask.bool() & ~response_mask
    # Columns after the last prompt token hold no prompt (with right padding: every response
    # column), so they are cut before the head projects them. `.max()` is one device sync.
    width = int(prompt_mask.any(dim=0).nonzero().max()) + 1
    device = _device_of(head)
    with _eval_mode(head):
        return head(
            hidden_states[:, :width].to(device, torch.float32),
            prompt_mask[:, :width].to(device, torch.long),
        )


# ----------------------------------------------------------------------------------------
# Saving, loading, plotting


def _json_safe(obj: Any) -> Any:
    """NaN (e.g. a correlation on constant targets) becomes null, so the file is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {key: _json_safe(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(value) for value in obj]
    return obj


def save_value_head(head: ValueHead, directory: str | Path, report: dict | None = None) -> None:
    """Write the head's weights, its shape, and (when given) the fit report, each atomically."""
    directory = Path(directory)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in head.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    write_json(
        directory / CONFIG_FILE,
        {"hidden_size": head.hidden_size, "num_heads": head.num_heads, "max_value": head.max_value},
    )
    if report is not None:
        write_json(directory / METRICS_FILE, _json_safe(report))


def load_value_head(directory: str | Path) -> ValueHead:
    """The head saved by `save_value_head`, on the CPU, in eval mode."""
    directory = Path(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(
                f"{directory / name} not found: {directory} holds no saved value head. "
                "Run `alol value` to fit one, or point to the directory it wrote."
            )
    try:
        shape = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        head = ValueHead(shape["hidden_size"], shape["num_heads"], shape["max_value"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(_corrupt_message(directory / CONFIG_FILE, error)) from error
    try:
        head.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    except Exception as error:  # safetensors raises its own error type for a torn file
        raise ValueError(_corrupt_message(directory / WEIGHTS_FILE, error)) from error
    return head.eval()


def _corrupt_message(path: Path, error: Exception) -> str:
    return (
        f"{path} is corrupt or does not match the value head's shape ({error}). "
        f"Delete {path.parent} and rerun `alol value` to fit the value head again."
    )


def plot_value_fit(report: dict[str, Any], path: str | Path) -> Path:
    """A PNG of the MSE per epoch and, when held-out points exist, predicted vs target V."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.5), layout="constrained")
    FigureCanvasAgg(figure)
    curves, scatter = figure.subplots(1, 2)
    epochs = range(1, len(report["train_mse_per_epoch"]) + 1)
    curves.plot(epochs, report["train_mse_per_epoch"], marker="o", label="train")
    curves.plot(epochs, report["heldout_mse_per_epoch"], marker="o", label="held-out")
    curves.axvline(report["best_epoch"], color="grey", linestyle=":", label="kept epoch")
    curves.set(xlabel="epoch", ylabel="MSE", title="value head fit")
    curves.legend()
    targets, predictions = report["heldout_targets"], report["heldout_predictions"]
    scatter.scatter(targets, predictions, s=12)
    if targets:
        low, high = min(targets + predictions), max(targets + predictions)
        scatter.plot([low, high], [low, high], color="grey", linestyle=":")
    scatter.set(xlabel="target reward", ylabel="predicted V(x)", title="held-out prompts")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return Path(path)
