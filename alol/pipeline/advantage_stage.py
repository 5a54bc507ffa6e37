"""Stage 3, the advantage precompute: reads π_ref, the training records, the value estimate in
`run_dir/value/` (the value head or per-prompt values; V(x) = 0 without one) and the reward, and writes the content-hashed table of
reference log-probs, V(x), R and A = R − V with advantage_stats.json, advantage_hist.png and
top_advantages.md (the answers A-LoL will learn most from) to `run_dir/advantage/`.
"""

from __future__ import annotations

import logging

from alol.config import PipelineConfig
from alol.data.table import AdvantageTable
from alol.distributed import on_main_process
from alol.pipeline.inputs import stage_inputs
from alol.pipeline.tables import advantage_table
from alol.reports.advantage_report import write_advantage_report

logger = logging.getLogger(__name__)


def run_advantage(cfg: PipelineConfig) -> AdvantageTable:
    """Reference log-probs, V(x), R and A for every training pair, cached by content hash."""
    out = cfg.root / "advantage"
    inputs = stage_inputs(cfg)
    table = advantage_table(inputs, inputs.train_pairs)
    stats = on_main_process(
        lambda: write_advantage_report(table, inputs.train_pairs, out, cfg.max_response_length)
    )
    if stats is not None:
        logger.info(
            "advantage: A > 0 for %.1f%% of %d training answers (mean R %.3f, mean V(x) %.3f, "
            "A from %.3f to %.3f); stats in %s, histogram in advantage_hist.png, the answers "
            "with the highest A in top_advantages.md",
            100 * stats["fraction_positive"],
            len(table),
            stats["reward"]["mean"],
            stats["value"]["mean"],
            stats["advantage"]["p0"],
            stats["advantage"]["p100"],
            out / "advantage_stats.json",
        )
    return table
