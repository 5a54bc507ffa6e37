"""Where bf16 mixed precision runs: only where it is native. A CPU without AVX-512 BF16 or
AMX emulates bf16 matrix products, and a training step under bf16 autocast then takes 13-16×
the float32 one (MiniLM, a SmolLM2-135M-shaped Llama: bench/results/cpu_bf16_emulated.md);
autocast keeps float32 weights, so it saves no memory there either. A config that asks for
bf16 (the HH recipe does, for GPUs and recent CPUs) therefore trains in float32 on such a CPU,
and the log says so."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


def has_accelerator() -> bool:
    xpu = getattr(torch, "xpu", None)
    return (
        torch.cuda.is_available()
        or torch.backends.mps.is_available()
        or (xpu is not None and xpu.is_available())
    )


def cpu_has_native_bf16() -> bool:
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(check and check())


def bf16_is_native() -> bool:
    """An accelerator, or a CPU with AVX-512 BF16 or AMX."""
    return has_accelerator() or cpu_has_native_bf16()


def bf16_is_native_on(device: str | torch.device) -> bool:
    """Whether bf16 is native on `device`: any accelerator, or a CPU with AVX-512 BF16 or AMX."""
    return torch.device(device).type != "cpu" or cpu_has_native_bf16()


def trains_in_bf16(bf16: bool) -> bool:
    """Whether a trainer asked for bf16 (`bf16`) runs bf16 autocast here: on an accelerator or
    a CPU with native bf16; elsewhere it trains in float32, with a warning that names the
    setting."""
    if not bf16 or bf16_is_native():
        return bf16
    logger.warning(
        "bf16: this CPU has no native bf16 (AVX-512 BF16 or AMX) and would emulate it at about "
        "15x the float32 time; training in float32 instead (set bf16: false to say so)"
    )
    return False


def needs_use_cpu(bf16: bool) -> bool:
    """Whether TrainingArguments need `use_cpu=True` to run bf16 here: transformers accepts
    bf16 without an accelerator only with it."""
    return bf16 and not has_accelerator()


def placed_precision(bf16: bool) -> dict[str, bool]:
    """TrainingArguments' `bf16` and `use_cpu` for a trainer whose config asks for `bf16`.
    Stage fingerprints hold the setting as configured, so a run folder means the same on
    every machine."""
    runs = trains_in_bf16(bf16)
    return {"bf16": runs, "use_cpu": needs_use_cpu(runs)}
