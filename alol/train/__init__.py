"""Training: `AlolConfig` (a `TrainingArguments`) and `AlolTrainer` (a `Trainer`) for every
objective of `alol.method.objectives`, with atomic checkpoints and wrapper-safe losses."""

from alol.train.config import AlolConfig
from alol.train.trainer import AlolTrainer

__all__ = ["AlolConfig", "AlolTrainer"]
