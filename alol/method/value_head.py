"""V(x): the expected reward of the frozen reference policy on a prompt, as a small head.

A learned query attends over the reference's last-layer hidden states of the prompt (layer-
normalised, padding masked out), then a linear layer, then `sigmoid · max_value` (or the raw
linear output when the reward range is unknown). Fitting it is `alol.models.value_fit`; its
files, `alol.models.value_io`."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


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
