"""Dropout switched off in a model that alol trains."""

from __future__ import annotations

from torch import nn


def without_dropout(model: nn.Module) -> nn.Module:
    """The model with every dropout layer off, in place. alol calls it before it adds an
    adapter, so the adapter keeps its `lora_dropout`.

    - A reward model's loss compares two scores, in which dropout is noise; on a CPU attention
      dropout also keeps scaled-dot-product attention off its fused kernel (a MiniLM fit step
      takes 2.6 times as long with it, bench/results/reward_model_dropout.md).
    - A policy's objectives compare π_θ with π_ref, whose log-probs are taken in eval mode:
      dropout in π_θ alone puts noise into the importance weight π_θ/π_ref, its clip fraction
      and DPO's and KTO's margins. TRL's DPO and KTO trainers switch it off by default too."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model
