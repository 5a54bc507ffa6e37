"""What wraps the trained model: peft adapters, activation checkpointing under this transformers'
name for it, and DDP/FSDP/DeepSpeed, whose forward alol's loss must run through."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, TrainingArguments


def call_through_wrapper(
    wrapper: nn.Module, inner: nn.Module, method: Callable[..., Any], *args: Any
) -> Any:
    """`method(*args)`, run as the forward of `wrapper` (DDP, FSDP, a DeepSpeed engine, or
    `inner` itself when nothing wraps it).

    The wrapper's forward does work that calling `inner`'s submodules directly would skip:
    DDP arms its gradient all-reduce, FSDP and ZeRO-3 gather the parameters of the root
    module. For the one call, `inner.forward` is swapped for `method`, so that
    `wrapper(*args)` reaches `method` through every hook; it is restored as soon as `method`
    starts, so `method` may itself call `inner`'s real forward.
    """
    had_own_forward = "forward" in inner.__dict__  # accelerate patches forward per instance
    own_forward = inner.__dict__.get("forward")

    def restore() -> None:
        if had_own_forward:
            inner.forward = own_forward
        else:
            inner.__dict__.pop("forward", None)

    def redirected_forward(*forward_args: Any) -> Any:
        restore()
        return method(*forward_args)

    inner.forward = redirected_forward
    try:
        return wrapper(*args)
    finally:
        restore()


def checkpointing_argument(enabled: bool) -> dict[str, bool]:
    """The TrainingArguments keyword that switches activation checkpointing, under the name this
    transformers uses: `activation_checkpointing` (5.x, which warns on the old name) or
    `gradient_checkpointing` (4.x). Both versions mirror the value into `gradient_checkpointing`,
    so code reading `args.gradient_checkpointing` works with either."""
    names = {f.name for f in fields(TrainingArguments)}
    if "activation_checkpointing" in names:
        return {"activation_checkpointing": enabled}
    return {"gradient_checkpointing": enabled}


def apply_lora(
    model: PreTrainedModel, peft_config: Any, gradient_checkpointing: bool, seed: int
) -> PreTrainedModel:
    """Wrap with peft; checkpointed LoRA needs inputs that require grad to reach the adapters.

    The adapters' random initial weights come from `seed` alone, not from whatever drew random
    numbers earlier in the process: objectives trained one after another start from the same
    adapters, and a rerun with other objectives listed gives each the same result."""
    from peft import get_peft_model

    if gradient_checkpointing:
        model.enable_input_require_grads()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        torch.manual_seed(seed)
        return get_peft_model(model, peft_config)
