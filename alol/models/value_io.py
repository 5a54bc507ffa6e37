"""The value head's files: its weights, its configuration and the model it was fitted on,
saved together and loaded back checked; and `ValueConfig`, how it is fitted."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from alol.atomic import atomic_path, write_json
from alol.config import PipelineConfig
from alol.data.settings import RecordSettings
from alol.method.value_head import ValueHead
from alol.models.dtypes import dtype_named
from alol.setting_checks import same_as

WEIGHTS_FILE = "value_head.safetensors"


CONFIG_FILE = "value_head.json"


METRICS_FILE = "value_metrics.json"


@dataclass
class ValueConfig:
    """How the value head is fitted; the defaults follow the A-LoL paper's setup."""

    epochs: int = same_as(PipelineConfig, "value_epochs")
    learning_rate: float = same_as(PipelineConfig, "value_learning_rate")
    prompt_batch_size: int = 16
    """Prompts per batch, both for the reference's forward pass and for the head's steps."""
    num_heads: int = 1
    """Attention heads of the pooling query; must divide the reference's hidden size."""
    dropout: float = 0.0
    """Dropout on the prompt states and the pooled state while fitting (the authors use 0.1);
    V is always read in eval mode, without it."""
    max_value: float | str | None = same_as(PipelineConfig, "value_max")
    holdout_fraction: float = 0.1
    """Share of the prompts held out to pick the best epoch (at least one when n >= 2)."""
    seed: int = same_as(PipelineConfig, "seed")
    max_prompt_length: int = same_as(RecordSettings, "max_prompt_length")
    feature_dtype: str = "float16"
    """CPU storage of the cached hidden states: float16 halves memory, float32 is exact."""

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"ValueConfig.epochs must be >= 1, got {self.epochs}")
        if self.prompt_batch_size < 1:
            raise ValueError(
                f"ValueConfig.prompt_batch_size must be >= 1, got {self.prompt_batch_size}"
            )
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
