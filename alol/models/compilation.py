"""torch.compile for training, one decoder layer at a time (regional compilation).

alol computes log-probs by calling the decoder body and the LM head directly (alol.models.logprobs),
so compiling the model's `forward`, as `TrainingArguments(torch_compile=True)` does, would not
reach them. Compiling each decoder layer in place does: whoever calls the layer (the decoder,
DDP, a checkpointing wrapper) runs the compiled code. All layers share one class and code, so
the first layer's compile serves the others and the wait stays short. What it buys: RMSNorm,
rotary embeddings and SwiGLU fuse into few kernels, where eager PyTorch launches one per
elementwise op (the launch- and elementwise-bound step of bench/NOTES.md's profile).
"""

from __future__ import annotations

import inspect

from torch import nn

from alol.choices import COMPILE_MODES

CACHE_ARGUMENTS = ("cache", "past_key_values", "past_key_value", "layer_past")
"""What transformers versions and models call the KV cache in a module's forward."""


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a transformers model (peft-wrapped or not): the modules whose
    class the model names in `_no_split_modules`, the same list FSDP wraps by."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    layers = [module for module in base.modules() if type(module).__name__ in names]
    if not layers:
        raise ValueError(
            f"cannot find the decoder layers of {type(base).__name__} (its _no_split_modules is "
            f"{sorted(names) or 'empty'}); train it without compile_layers"
        )
    return layers


def compile_decoder_layers(model: nn.Module, mode: str | None = None) -> int:
    """Compile every decoder layer of `model` in place with inductor; returns how many.

    Shapes are left to dynamo's automatic dynamic mode: the first new sequence length
    recompiles once with a symbolic length, later ones reuse that graph. `mode` is torch's
    (None means "default"); "reduce-overhead" adds CUDA graphs, which want few distinct shapes
    (pad batches to a multiple with `pad_to_multiple_of`).
    """
    _check_mode(mode)
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile(mode=mode)
    return len(layers)


def compile_cache_free_parts(model: nn.Module, mode: str | None = None) -> int:
    """Compile, in every decoder layer, the children whose forward takes no KV cache (norms,
    MLP); returns how many. For passes that run with a cache (the prompt-shared precompute).

    The attention reads and writes the cache at its layer's index, so a compiled whole layer
    gets graphs specialised per layer and per call (~5 each), and dynamo stops compiling a code
    object after 8 (`recompile_limit`): past the second layer everything would run eager. The
    cache-free parts share code across layers and compile once or twice; the attention (and
    its rotary embedding) stays eager.
    """
    _check_mode(mode)
    parts = [
        child
        for layer in decoder_layers(model)
        for child in layer.children()
        if not _takes_cache(child)
    ]
    for part in parts:
        part.compile(mode=mode)
    return len(parts)


def _check_mode(mode: str | None) -> None:
    if mode is not None and mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {mode!r}")


def _takes_cache(module: nn.Module) -> bool:
    parameters = inspect.signature(module.forward).parameters
    return any(name in parameters for name in CACHE_ARGUMENTS)
