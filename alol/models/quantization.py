"""QLoRA's 4-bit base model: the frozen weights stored as NF4 through bitsandbytes, the
adapters and every computation in the compute dtype, so a 7B model trains on one GPU.

The same quantized weights serve as the policy's frozen base and as π_ref in the precompute:
quantization is deterministic, so the importance ratio starts at 1 as it does unquantized.
Decoding (value samples, evaluation) reads the full-precision weights; an adapter trained on
the 4-bit base is applied to them, as QLoRA's authors evaluate.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from torch import nn

from alol.distributed import process_state
from alol.errors import AlolError
from alol.models.dtypes import DTYPES

BITSANDBYTES_INSTALL = "pip install 'alol[qlora]'  (bitsandbytes >= 0.46)"

FOUR_BIT_SETTINGS = {
    "load_in_4bit": True,
    "bnb_4bit_quant_type": "nf4",
    "bnb_4bit_use_double_quant": True,
}
"""QLoRA's choices: NormalFloat4, with the quantization constants quantized again."""


def four_bit_settings(compute_dtype: str) -> dict[str, Any]:
    """The `BitsAndBytesConfig` keyword arguments, `compute_dtype` a name of `alol.models.dtypes.DTYPES`."""
    return {**FOUR_BIT_SETTINGS, "bnb_4bit_compute_dtype": compute_dtype}


def four_bit_config(compute_dtype: str):
    """A `BitsAndBytesConfig` for NF4 weights; a clear error when bitsandbytes is missing."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise AlolError(
            f"--load-in-4bit stores the base model in 4 bits through bitsandbytes, which is not "
            f"installed: {BITSANDBYTES_INSTALL}"
        )
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(**four_bit_settings(compute_dtype))


def load_4bit_causal_lm(path: str | Path, compute_dtype: str):
    """The causal LM at `path` with 4-bit linear layers, on this process's device (bitsandbytes
    quantizes on the device the weights land on: each process of a multi-GPU run its own)."""
    from transformers import AutoModelForCausalLM

    device = process_state().device
    return AutoModelForCausalLM.from_pretrained(
        path,
        quantization_config=four_bit_config(compute_dtype),
        dtype=DTYPES[compute_dtype],
        device_map={"": device} if device.type == "cuda" else None,
    )


def is_quantized(model: nn.Module) -> bool:
    """Whether `model` (or the model a peft wrapper holds) has bitsandbytes 4- or 8-bit layers."""
    base = getattr(model, "get_base_model", lambda: model)()
    return bool(
        getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False)
    )


def prepare_for_adapters(model: nn.Module, gradient_checkpointing: bool) -> nn.Module:
    """peft's preparation of a quantized model for adapter training: the layers left in floats
    (norms, embeddings, head) in float32 for stable updates, and inputs that require grad when
    activations are recomputed."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )


def merged_into_full_precision(adapter_dir: Path, base: str | Path):
    """An adapter trained on the 4-bit base, merged into the base's full-precision weights:
    the model that decodes and that later stages load (merging into 4-bit weights would round
    the update away)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    full = AutoModelForCausalLM.from_pretrained(base, dtype="auto")  # as the base is stored
    return PeftModel.from_pretrained(full, adapter_dir).merge_and_unload()
