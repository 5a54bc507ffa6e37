"""Stage 3, the advantage precompute: reads π_ref, the training records, the value head in
`run_dir/value/` (V(x) = 0 without one) and the reward, and writes the content-hashed table of
reference log-probs, V(x), R and A = R − V with advantage_stats.json and advantage_hist.png to
`run_dir/advantage/`.
"""

from __future__ import annotations

import hashlib
import logging

from alol.advantage import (
    AdvantageConfig,
    advantage_stats,
    compute_advantages,
    write_advantage_report,
)
from alol.config import PipelineConfig
from alol.conversions import to_reward_records
from alol.distributed import on_main_process
from alol.fingerprint import cache_key, fingerprint_model, fingerprint_records
from alol.pipeline.inputs import (
    configured_reference_dtype,
    configured_reward,
    load_model_for_inference,
    load_splits,
    reference_path,
    reward_fingerprint,
)
from alol.table import AdvantageTable, load_or_compute
from alol.value import load_value_head

logger = logging.getLogger(__name__)


def run_advantage(cfg: PipelineConfig) -> AdvantageTable:
    """Reference log-probs, V(x), R and A for every training pair, cached by content hash."""
    out = cfg.root / "advantage"
    ref = reference_path(cfg)
    records = to_reward_records(load_splits(cfg).train)
    value_dir = cfg.root / "value"
    head_file = value_dir / "value_head.safetensors"
    value_fp = hashlib.sha256(head_file.read_bytes()).hexdigest() if head_file.exists() else None
    config = advantage_config(cfg)
    key = cache_key(
        fingerprint_model(ref),
        fingerprint_records(records),
        reward_fingerprint(cfg),
        config.key_fields(),
        value_fp,
    )

    def compute() -> AdvantageTable:
        model, tokenizer = load_model_for_inference(ref, config.reference_dtype)
        head = load_value_head(value_dir) if value_fp else None
        if head is None:
            logger.warning(
                "advantage: no value head in %s; V(x) = 0 (run `alol value` for A-LoL)", value_dir
            )
        return compute_advantages(
            model, tokenizer, records, config, value_head=head, reward=configured_reward(cfg)
        )

    table = load_or_compute(out, key, compute)
    stats = advantage_stats(table)
    on_main_process(lambda: write_advantage_report(table, out))
    logger.info(
        "advantage: %.1f%% of %d examples have A > 0", 100 * stats["fraction_positive"], len(table)
    )
    return table


def advantage_config(cfg: PipelineConfig) -> AdvantageConfig:
    return AdvantageConfig(
        batch_size=cfg.precompute_batch_size,
        max_prompt_length=cfg.max_prompt_length,
        max_response_length=cfg.max_response_length,
        vocab_chunk_size=cfg.vocab_chunk_size,
        reward_timeout=cfg.reward_timeout,
        reference_dtype=configured_reference_dtype(cfg),
        share_prompts=cfg.share_prompts,
        compile_layers=cfg.compile_layers,
        compile_mode=cfg.compile_mode,
    )
