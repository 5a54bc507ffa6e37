"""Conversions between record kinds, where they make sense: each objective family trains on
one kind (reward records for the pointwise objectives, pairs for DPO, ranked lists for PRO)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from alol.data.records import (
    CHOSEN_REWARD,
    REJECTED_REWARD,
    PreferenceRecord,
    RankedRecord,
    Record,
    RewardRecord,
)
from alol.errors import DataError

logger = logging.getLogger(__name__)


def to_reward_records(
    records: Iterable[Record], preferred_only: bool = False
) -> list[RewardRecord]:
    """One reward record per response: what the reward-based objectives train on.

    A preference pair gives its chosen response reward CHOSEN_REWARD (1.0) and its rejected one
    REJECTED_REWARD (0.0), all that a bare preference says; score them with a reward function for
    graded rewards. A ranked record gives one record per candidate, with its reward. Ids gain a
    suffix ("/chosen", "/rejected", "/<candidate index>") so they stay unique.

    `preferred_only` keeps one response per pair or ranked record: the chosen one, or the first
    candidate (the HH/PRO files list the human-preferred response first). The A-LoL authors
    train NLL, wBC and the A-LoL family on it alone, so the rejected answers are never learned.
    """
    converted: list[RewardRecord] = []
    for record in records:
        if isinstance(record, RewardRecord):
            converted.append(record)
        elif isinstance(record, PreferenceRecord):
            sides = [(record.chosen, CHOSEN_REWARD, "chosen")]
            if not preferred_only:
                sides.append((record.rejected, REJECTED_REWARD, "rejected"))
            for response, reward, name in sides:
                converted.append(
                    RewardRecord(
                        record.prompt,
                        response,
                        reward,
                        _sub_id(record.id, name),
                        record.source,
                        group=record.group,
                    )
                )
        elif isinstance(record, RankedRecord):
            converted.extend(
                RewardRecord(
                    record.prompt,
                    response,
                    reward,
                    _sub_id(record.id, str(i)),
                    record.source,
                    group=record.group,
                )
                for i, (response, reward) in enumerate(
                    zip(record.responses, record.rewards, strict=True)
                )
                if i == 0 or not preferred_only
            )
        else:
            raise _not_a_record(record)
    return converted


def to_preference_records(records: Iterable[Record]) -> list[PreferenceRecord]:
    """Preference pairs (for DPO) from ranked records, or from reward records grouped by prompt.

    A ranked record pairs its best response (the first, if several share the best reward) as
    chosen with each strictly worse response as rejected: K candidates give up to K - 1 pairs.
    A candidate tied with the best gives no pair: it is dropped, and the number dropped is
    logged as a warning. Reward records are first grouped by identical prompt, as in
    `to_ranked_records`; a prompt with a single response cannot form a pair and is dropped (and
    counted) there. Preference records pass through.
    """
    pairs: list[PreferenceRecord] = []
    ties = 0
    for record in _group_reward_records(records):
        if isinstance(record, PreferenceRecord):
            pairs.append(record)
            continue
        record_pairs, record_ties = _best_against_worse(record)
        pairs.extend(record_pairs)
        ties += record_ties
    if ties:
        logger.warning(
            "dropped %d candidate(s) tied with the best response of their prompt: a tie is no preference",
            ties,
        )
    return pairs


def _best_against_worse(record: RankedRecord) -> tuple[list[PreferenceRecord], int]:
    best = max(range(len(record.rewards)), key=record.rewards.__getitem__)
    pairs, ties = [], 0
    for i, (response, reward) in enumerate(zip(record.responses, record.rewards, strict=True)):
        if i == best:
            continue
        if reward == record.rewards[best]:
            ties += 1
            continue
        pairs.append(
            PreferenceRecord(
                record.prompt,
                record.responses[best],
                response,
                _sub_id(record.id, f"{best}>{i}"),
                record.source,
                group=record.group,
            )
        )
    return pairs, ties


def to_ranked_records(records: Iterable[Record]) -> list[RankedRecord]:
    """Ranked records (for PRO) from preference pairs, or from reward records grouped by prompt.

    A preference pair becomes [chosen, rejected] with rewards [1.0, 0.0]. Reward records with an
    identical prompt become one ranked record, candidates in input order, placed where the
    prompt first appears; each needs a reward (its `total_reward`). A prompt with a single
    response cannot be ranked: it is dropped, and the number dropped is logged as a warning.
    """
    ranked: list[RankedRecord] = []
    for record in _group_reward_records(records):
        if isinstance(record, PreferenceRecord):
            record = RankedRecord(
                record.prompt,
                [record.chosen, record.rejected],
                [CHOSEN_REWARD, REJECTED_REWARD],
                record.id,
                record.source,
                group=record.group,
            )
        ranked.append(record)
    return ranked


def _group_reward_records(records: Iterable[Record]) -> list[PreferenceRecord | RankedRecord]:
    """Replace reward records by one ranked record per prompt (2+ responses); keep the others."""
    slots: list[PreferenceRecord | RankedRecord | list[RewardRecord]] = []
    groups: dict[str, list[RewardRecord]] = {}
    for record in records:
        if isinstance(record, RewardRecord):
            key = json.dumps(record.prompt, sort_keys=True)
            if key not in groups:
                groups[key] = []
                slots.append(groups[key])
            groups[key].append(record)
        elif isinstance(record, PreferenceRecord | RankedRecord):
            slots.append(record)
        else:
            raise _not_a_record(record)
    grouped: list[PreferenceRecord | RankedRecord] = []
    singles = 0
    for slot in slots:
        if not isinstance(slot, list):
            grouped.append(slot)
        elif len(slot) == 1:
            singles += 1
        else:
            grouped.append(_ranked_from_group(slot))
    if singles:
        logger.warning(
            "dropped %d prompt(s) with a single response: one response cannot be ranked or paired",
            singles,
        )
    return grouped


def _ranked_from_group(group: list[RewardRecord]) -> RankedRecord:
    for record in group:
        if record.total_reward is None:
            raise DataError(
                "no reward; score the records with a reward function first", field="reward"
            ).at(*split_source(record.source))
    first = group[0]
    return RankedRecord(
        first.prompt,
        [record.response for record in group],
        [record.total_reward for record in group],
        first.id,
        first.source,
        group=first.group,
    )


def split_source(source: str) -> tuple[str, int | None]:
    """A record's "file:line" source as the file and the line, for `DataError.at`."""
    file, _, line = source.rpartition(":")
    return (file, int(line)) if line.isdigit() else (source, None)


def _sub_id(record_id: str | None, suffix: str) -> str | None:
    return None if record_id is None else f"{record_id}/{suffix}"


def _not_a_record(value: Any) -> TypeError:
    return TypeError(
        f"expected RewardRecord, PreferenceRecord or RankedRecord, got {type(value).__name__}"
    )
