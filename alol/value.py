"""V(x): the expected reward of the frozen reference policy on a prompt, as a small head.

A learned query attends over the reference's last-layer hidden states of the prompt (layer-
normalised, padding masked out), then a linear layer, then `sigmoid · max_value` (or the raw linear output when
the reward range is unknown). Fitting it is `alol.value_fit`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from alol.atomic import atomic_path, write_json
from alol.dtypes import dtype_named

WEIGHTS_FILE = "value_head.safetensors"


CONFIG_FILE = "value_head.json"


METRICS_FILE = "value_metrics.json"


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
    dropout: float = 0.0
    """Dropout on the prompt states and the pooled state while fitting (the authors use 0.1);
    V is always read in eval mode, without it."""
    max_value: float | str | None = "auto"
    """Upper bound of V (output `sigmoid · max_value`); None: an unbounded linear output;
    "auto": bounded to (0, 1) when every target lies in [0, 1], else unbounded."""
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
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ValueConfig.dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(
                f"ValueConfig.holdout_fraction must be in [0, 1), got {self.holdout_fraction}"
            )
        if self.max_value not in (None, "auto") and (
            isinstance(self.max_value, str) or self.max_value <= 0
        ):
            raise ValueError(
                f"ValueConfig.max_value must be positive, 'auto' or None, got {self.max_value!r}; "
                "use None for rewards without a known range"
            )
        dtype_named(self.feature_dtype, "ValueConfig.feature_dtype")


class ValueHead(nn.Module):
    """Attention pooling over the prompt's hidden states, then a scalar value.

    The pooling has no positional terms, so it only sees *which* hidden states are real, never
    where they sit: left and right padding give the same value.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int = 1,
        max_value: float | None = 1.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(
                f"num_heads={num_heads} does not divide the hidden size {hidden_size}; "
                "choose a divisor (1 always works)"
            )
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.max_value = max_value
        self.dropout = nn.Dropout(dropout)
        # Pretrained models' last hidden states reach magnitudes in the tens or hundreds; at
        # that scale one Adam step on the output layer moves the logit by tens and the sigmoid
        # saturates for good. Normalised states keep the head's scale the same for any model.
        self.norm = nn.LayerNorm(hidden_size)
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
        hidden_states = self.dropout(self.norm(hidden_states))
        pooled, _ = self.attention(
            query, hidden_states, hidden_states, key_padding_mask=is_padding, need_weights=False
        )
        logit = self.output(self.dropout(pooled[:, 0])).squeeze(-1)
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


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Switch off dropout for the block, then restore the caller's train/eval mode."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


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
    device = device_of(head)
    with eval_mode(head):
        return head(
            hidden_states[:, :width].to(device, torch.float32),
            prompt_mask[:, :width].to(device, torch.long),
        )


def _json_safe(obj: Any) -> Any:
    """NaN (e.g. a correlation on constant targets) becomes null, so the file is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {key: _json_safe(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(value) for value in obj]
    return obj


def save_value_head(
    head: ValueHead,
    directory: str | Path,
    report: dict | None = None,
    model: dict[str, str] | None = None,
) -> None:
    """Write the head's weights, its shape, the model whose states it reads
    (`alol.provenance.model_record`), and (when given) the fit report, each atomically."""
    directory = Path(directory)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in head.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    write_json(
        directory / CONFIG_FILE,
        {
            "hidden_size": head.hidden_size,
            "num_heads": head.num_heads,
            "max_value": head.max_value,
            "dropout": head.dropout.p,
            "model": model,
        },
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
        head = ValueHead(
            shape["hidden_size"], shape["num_heads"], shape["max_value"], shape.get("dropout", 0.0)
        )
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(_corrupt_message(directory / CONFIG_FILE, error)) from error
    try:
        head.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    except Exception as error:  # safetensors raises its own error type for a torn file
        raise ValueError(_corrupt_message(directory / WEIGHTS_FILE, error)) from error
    return head.eval()


def value_head_model(directory: str | Path) -> dict[str, str] | None:
    """The record of the model the head in `directory` was fitted on; None when not recorded."""
    config = Path(directory) / CONFIG_FILE
    if not config.is_file():
        return None
    try:
        shape = json.loads(config.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(_corrupt_message(config, error)) from error
    return shape.get("model") if isinstance(shape, dict) else None


def _corrupt_message(path: Path, error: Exception) -> str:
    return (
        f"{path} is corrupt or does not match the value head's shape ({error}). "
        f"Delete {path.parent} and rerun `alol value` to fit the value head again."
    )
