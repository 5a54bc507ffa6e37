"""The precompute tables a config names, computed once and cached by content hash: the training
pairs' advantage table (`run_dir/advantage/advantages-*`) and π_ref's log-probs of DPO's
pairs and KTO's sequences (`run_dir/pairs/`, `run_dir/kto/`, `reference_logps-*`). The
advantage and train stages both read them through here."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alol.data.records import RewardRecord
from alol.data.table import REFERENCE_LOGPS, AdvantageTable, load_or_compute
from alol.errors import AlolError
from alol.fingerprint import cache_key, file_sha256, fingerprint_records, record_hashes
from alol.method.value_head import ValueHead
from alol.models.precompute import compute_advantages
from alol.models.prompt_values import (
    VALUES_FILE,
    covers,
    load_prompt_values,
    prompt_values_model,
    values_of,
)
from alol.models.reference import gather_by_prompt_group, prepare_reference, reference_pass
from alol.models.value_io import WEIGHTS_FILE, load_value_head, value_head_model
from alol.pipeline.inputs import StageInputs, load_model_for_inference, load_tokenizer, render
from alol.pipeline.settings import advantage_config
from alol.provenance import check_made_for


def advantage_table(
    inputs: StageInputs, records: list[RewardRecord], needs_value: bool = True
) -> AdvantageTable:
    """Reference log-probs, V(x), R and A for each of `records`, cached by content hash.

    V(x) comes from the value estimate in `run_dir/value/`: the value head, or π_ref's
    per-prompt values (`value_estimate`). Only the reward-weighted objectives
    (`needs_value=False`) may go without one, with V(x) = 0: for the advantage audit and the
    A-LoL objectives, V = 0 would call every rewarded response better than π_ref's own.
    """
    ref = inputs.reference
    head, values, value_fp = value_estimate(inputs, records, needs_value)
    config = advantage_config(inputs.cfg)
    key = cache_key(
        inputs.reference_fingerprint,
        fingerprint_records(records),
        inputs.reward_fingerprint,
        config.key_fields(),
        value_fp,
    )

    def compute() -> AdvantageTable:
        model, tokenizer = load_model_for_inference(
            ref, config.reference_dtype, config.load_in_4bit
        )
        reward = inputs.load_reward()
        return compute_advantages(model, tokenizer, records, config, head, reward, values)

    return load_or_compute(inputs.cfg.root / "advantage", key, compute)


def value_estimate(
    inputs: StageInputs, records: list[RewardRecord], needs_value: bool
) -> tuple[ValueHead | None, list[float] | None, str | None]:
    """(the value head, or each record's per-prompt value; the fingerprint of their file):
    the estimate the config names, checked to be made for π_ref, per-prompt values looked up
    before π_ref loads. (None, None, None) where V(x) = 0 will do."""
    value_dir = inputs.cfg.root / "value"
    per_prompt = inputs.cfg.value_estimate == "per_prompt"
    saved = value_dir / (VALUES_FILE if per_prompt else WEIGHTS_FILE)
    if not saved.exists():
        if needs_value:
            raise AlolError(_no_estimate_message(value_dir, per_prompt))
        return None, None, None
    # loaded first: a damaged file says so, before the record of its model is read
    head = None if per_prompt else load_value_head(value_dir)
    values = load_prompt_values(value_dir) if per_prompt else None
    made_for = prompt_values_model(value_dir) if per_prompt else value_head_model(value_dir)
    check_made_for(
        f"the {'per-prompt values' if per_prompt else 'value head'} in {value_dir}",
        made_for,
        inputs.reference,
        inputs.reference_fingerprint,
        "run `alol value` again on this reference with this config (or `alol run`)",
    )
    if values is None:
        return head, None, file_sha256(saved)
    tokenizer = load_tokenizer(inputs.reference)
    prompts = [render(inputs.cfg, record.prompt, tokenizer) for record in records]
    if not needs_value and not covers(values, prompts):
        return None, None, None  # values of other prompts: objectives of R alone take V = 0
    return None, values_of(prompts, values, [r.source for r in records]), file_sha256(saved)


def _no_estimate_message(value_dir: Path, per_prompt: bool) -> str:
    """Why A needs V, and how to make the missing estimate (or use the other one found there)."""
    estimate, other, setting = (
        ("per-prompt values", "a value head", "head")
        if per_prompt
        else ("value head", "per-prompt values", "per_prompt")
    )
    found = value_dir / (WEIGHTS_FILE if per_prompt else VALUES_FILE)
    hint = f" It holds {other}, which --value-estimate {setting} uses." if found.exists() else ""
    return (
        f"no {estimate} in {value_dir}: A = R − V(x) needs V, the reward π_ref itself earns on "
        "each prompt (with V = 0 every rewarded response would count as better than "
        f"π_ref's).{hint} Make V first with `alol value` and the same config, or run every "
        "stage with `alol run`."
    )


def reference_logps(inputs: StageInputs, sequences: list[RewardRecord], folder: str) -> np.ndarray:
    """π_ref's summed log-probs of each (prompt, response), precomputed once and cached by
    content hash in `run_dir/<folder>/` (DPO's pairs, KTO's completions and mismatched pairs)."""
    config = advantage_config(inputs.cfg)
    key = cache_key(
        inputs.reference_fingerprint, fingerprint_records(sequences), None, config.key_fields()
    )

    def compute() -> AdvantageTable:
        model, tokenizer = load_model_for_inference(
            inputs.reference, config.reference_dtype, config.load_in_4bit
        )
        prepare_reference(model, config)
        prompts = [render(inputs.cfg, record.prompt, tokenizer) for record in sequences]
        responses = [record.response for record in sequences]
        token_logps = gather_by_prompt_group(
            prompts,
            config.share_prompts,
            lambda indices: reference_pass(
                model,
                tokenizer,
                [prompts[i] for i in indices],
                [responses[i] for i in indices],
                None,
                config,
            )[0],
        )
        hashes = record_hashes(sequences)
        return AdvantageTable.from_examples(None, None, token_logps, record_hashes=hashes)

    table = load_or_compute(inputs.cfg.root / folder, key, compute, REFERENCE_LOGPS)
    return joined(sequences, table).ref_logp


def joined(records: list[RewardRecord], table: AdvantageTable) -> AdvantageTable:
    """`table`, checked to hold one row per record of `records`, in order, each computed from
    that record: what makes indexing both by the same number safe."""
    table.check_rows(record_hashes(records), [record.source for record in records])
    return table
