"""The weight and feature dtypes alol runs models in, by the names configs and cache keys use."""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def dtype_named(name: str, setting: str) -> torch.dtype:
    """The torch dtype called `name`; an unknown name is refused naming the `setting`."""
    if name not in DTYPES:
        raise ValueError(f"{setting} must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]
