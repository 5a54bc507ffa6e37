"""The precompute pass, its cache, its statistics, and the priority sampler."""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import save_file
from transformers import AutoModelForCausalLM

from alol.data.collate import collate_pairs, collate_prompt_groups
from alol.data.records import RewardRecord
from alol.data.table import (
    AdvantageCacheError,
    AdvantageTable,
    TableMismatchError,
    cache_path,
    load_or_compute,
    sidecar_path,
)
from alol.data.tokenize import encode_prompt, tokenize_pair
from alol.distributed import shard_indices
from alol.errors import AlolError, DataError
from alol.fingerprint import cache_key, fingerprint_model, fingerprint_records, record_hashes
from alol.method.leftover import (
    NoPositiveAdvantageError,
    balanced_by_group,
    budget_steps,
    length_neutral,
    response_words,
    select_training_examples,
)
from alol.method.sampling import PrioritySampler
from alol.method.value_head import ValueHead
from alol.models.logprobs import response_token_logprobs
from alol.models.precompute import AdvantageConfig, compute_advantages
from alol.models.reference import score_reference_batch
from alol.models.value_fit import predict_values
from alol.pipeline.tables import joined
from alol.reports.advantage_report import (
    advantage_stats,
    length_weighting,
    top_draw_share,
    write_advantage_report,
)

# V(x) from the precompute's prompt positions vs predict_values' own pass over the prompts: the
# same float32 arithmetic up to summation order and the padding of the attention.
FP32_VALUE = {"rtol": 0.0, "atol": 1e-5}


def make_table(reward, value, token_logps=None, components=None, records=None) -> AdvantageTable:
    """A synthetic table; by default each example has one response token with log-prob −1, and
    its record is `synthetic_records(reward)`'s."""
    if token_logps is None:
        token_logps = [np.array([-1.0])] * len(reward)
    hashes = record_hashes(records or synthetic_records(reward))
    return AdvantageTable.from_examples(
        reward, value, token_logps, components, record_hashes=hashes
    )


def synthetic_records(rewards) -> list[RewardRecord]:
    return [
        RewardRecord(f"prompt {i}", f"response {i}", r, source=f"train.jsonl:{i + 1}")
        for i, r in enumerate(rewards)
    ]


# ---------------------------------------------------------------------------------------------
# The table


def test_table_computes_advantage_as_reward_minus_value_and_sums_token_logps():
    """R = [1, 0.5], V = [0.25, 0.75] → A = [0.75, −0.25].
    Token log-probs [[−1, −2], [−0.5]] → log π_ref(y|x) = [−3, −0.5], offsets [0, 2, 3]."""
    table = make_table([1.0, 0.5], [0.25, 0.75], [np.array([-1.0, -2.0]), np.array([-0.5])])

    np.testing.assert_allclose(table.advantage, [0.75, -0.25])
    np.testing.assert_allclose(table.ref_logp, [-3.0, -0.5])
    np.testing.assert_array_equal(table.offsets, [0, 2, 3])
    np.testing.assert_array_equal(table.response_length, [2, 1])
    np.testing.assert_array_equal(table.token_logps(0), np.array([-1.0, -2.0], np.float32))
    np.testing.assert_array_equal(table.token_logps(1), np.array([-0.5], np.float32))
    assert table.ref_token_logps.dtype == np.float32
    assert len(table) == 2


def test_table_rejects_offsets_that_do_not_match_the_token_logps():
    table = make_table([1.0, 0.5], [0.0, 0.0])
    with pytest.raises(ValueError, match="offsets"):
        AdvantageTable(
            reward=table.reward,
            value=table.value,
            advantage=table.advantage,
            ref_logp=table.ref_logp,
            ref_token_logps=table.ref_token_logps,
            offsets=np.array([0, 1, 3]),
            response_length=table.response_length,
            record_hashes=table.record_hashes,
        )


def test_table_save_then_load_round_trips_every_array_component_and_key(tmp_path):
    table = make_table(
        [1.0, 0.5, 0.0],
        [0.25, 0.75, 0.5],
        [np.array([-1.0, -2.0]), np.array([-0.5]), np.array([-0.1, -0.2, -0.3])],
        components={"helpful": [0.5, 0.25, 0.0], "harmless": [0.5, 0.25, 0.0]},
    )
    table.key = "abc123"
    path = table.save(tmp_path / "advantages.safetensors")

    loaded = AdvantageTable.load(path)

    for name in ("reward", "value", "advantage", "ref_logp", "ref_token_logps", "offsets"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(table, name))
    np.testing.assert_array_equal(loaded.response_length, table.response_length)
    np.testing.assert_array_equal(loaded.record_hashes, table.record_hashes)
    assert sorted(loaded.components) == ["harmless", "helpful"]
    np.testing.assert_array_equal(loaded.components["helpful"], [0.5, 0.25, 0.0])
    assert loaded.key == "abc123"
    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar["key"] == "abc123" and sidecar["count"] == 3
    assert sidecar["fraction_positive"] == pytest.approx(1 / 3)


def test_a_table_joined_with_the_records_it_was_computed_from_is_the_table():
    records = synthetic_records([1.0, 0.5, 0.0])
    table = make_table([1.0, 0.5, 0.0], [0.0] * 3, records=records)

    assert joined(records, table) is table


def test_a_table_joined_with_a_filtered_record_list_is_refused():
    """Joined by index, record 1 of the shorter list would take row 1's reward: record 2's."""
    records = synthetic_records([1.0, 0.5, 0.0])
    table = make_table([1.0, 0.5, 0.0], [0.0] * 3, records=records)

    with pytest.raises(TableMismatchError, match=r"2 records joined with a table of 3 rows"):
        joined([records[0], records[2]], table)


def test_a_table_joined_with_other_records_names_the_first_that_differs():
    records = synthetic_records([1.0, 0.5, 0.0])
    table = make_table([1.0, 0.5, 0.0], [0.0] * 3, records=records)
    edited = [records[0], replace(records[1], reward=0.9), records[2]]

    with pytest.raises(TableMismatchError) as refused:
        joined(edited, table)

    assert isinstance(refused.value, AlolError)
    assert "record 1 (train.jsonl:2) is not the record row 1 of the table was computed from" in (
        str(refused.value)
    )
    assert "(1 of 3 rows differ)" in str(refused.value)


def test_a_table_saved_without_its_records_hashes_is_unreadable_and_recomputed(tmp_path):
    """Tables written before tables named their records cannot be checked against them."""
    path = make_table([1.0, 0.0], [0.5, 0.5]).save(tmp_path / "advantages.safetensors")
    with safe_open(str(path), framework="numpy") as handle:
        metadata = handle.metadata()
        arrays = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    del arrays["record_hashes"]
    save_file(arrays, str(path), metadata=metadata)

    with pytest.raises(AdvantageCacheError, match=r"\['record_hashes'\] are missing"):
        AdvantageTable.load(path)


def test_loading_a_missing_cache_names_the_file_and_says_how_to_compute_it(tmp_path):
    path = tmp_path / "advantages-0123.safetensors"
    with pytest.raises(AdvantageCacheError, match=r"advantages-0123.*not found.*alol advantage"):
        AdvantageTable.load(path)


def test_loading_a_truncated_cache_says_to_delete_it_and_rerun(tmp_path):
    path = make_table([1.0, 0.0], [0.5, 0.5]).save(tmp_path / "advantages.safetensors")
    path.write_bytes(path.read_bytes()[:-8])

    with pytest.raises(AdvantageCacheError, match=r"unreadable.*delete it.*rerun `alol advantage`"):
        AdvantageTable.load(path)


def test_loading_refuses_a_sidecar_whose_key_differs_from_the_tensors(tmp_path):
    """A crash between writing the tensors and the sidecar must not pass for a valid cache."""
    table = make_table([1.0, 0.0], [0.5, 0.5])
    table.key = "new"
    path = table.save(tmp_path / "advantages.safetensors")
    sidecar = sidecar_path(path)
    sidecar.write_text(sidecar.read_text().replace('"new"', '"old"'))

    with pytest.raises(AdvantageCacheError, match="different keys"):
        AdvantageTable.load(path)


# ---------------------------------------------------------------------------------------------
# Fingerprints and the cache

BASE_KEY_INPUTS = {
    "model_fp": "model-a",
    "data_fp": "data-a",
    "reward_fp": "reward-a",
    "config_dict": {"max_prompt_length": 640, "max_response_length": 128},
    "value_fp": "value-a",
}


@pytest.mark.parametrize(
    "changed",
    [
        {"model_fp": "model-b"},
        {"data_fp": "data-b"},
        {"reward_fp": "reward-b"},
        {"reward_fp": None},
        {"config_dict": {"max_prompt_length": 512, "max_response_length": 128}},
        {"value_fp": "value-b"},
        {"value_fp": None},
    ],
)
def test_cache_key_changes_when_any_input_changes(changed):
    assert cache_key(**{**BASE_KEY_INPUTS, **changed}) != cache_key(**BASE_KEY_INPUTS)


def test_cache_key_is_a_sha256_that_ignores_the_order_of_config_entries():
    reordered = {"max_response_length": 128, "max_prompt_length": 640}
    key = cache_key(**BASE_KEY_INPUTS)
    assert key == cache_key(**{**BASE_KEY_INPUTS, "config_dict": reordered})
    assert len(key) == 64 and int(key, 16) >= 0


def test_only_the_length_limits_and_the_reference_dtype_enter_the_key():
    small = AdvantageConfig(batch_size=2, vocab_chunk_size=64, show_progress=False)
    assert small.key_fields() == AdvantageConfig().key_fields()
    assert AdvantageConfig(max_response_length=64).key_fields() != AdvantageConfig().key_fields()
    bf16 = AdvantageConfig(reference_dtype="bfloat16")
    assert bf16.key_fields() != AdvantageConfig().key_fields()


def test_an_unknown_reference_dtype_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"reference_dtype must be one of .*'bfloat16'.*'fp8'"):
        AdvantageConfig(reference_dtype="fp8")


def test_record_fingerprint_follows_prompt_response_reward_and_order_only():
    records = [
        RewardRecord(prompt="Hi", response="Hello!", reward=1.0, id="a", source="x.jsonl:1"),
        RewardRecord(prompt=[{"role": "user", "content": "Q"}], response="A", reward={"h": 0.5}),
    ]
    base = fingerprint_records(records)

    relabelled = [
        RewardRecord(r.prompt, r.response, r.reward, id="other", source="moved.jsonl:9")
        for r in records
    ]
    assert fingerprint_records(relabelled) == base
    changed = [
        [RewardRecord("Hi!", "Hello!", 1.0), records[1]],
        [RewardRecord("Hi", "Hello", 1.0), records[1]],
        [RewardRecord("Hi", "Hello!", 0.5), records[1]],
        [records[0], RewardRecord(records[1].prompt, "A", {"h": 0.25})],
        records[::-1],
        records[:1],
    ]
    assert len({fingerprint_records(c) for c in changed} | {base}) == len(changed) + 1


def test_model_fingerprint_survives_a_copy_and_changes_with_weights_or_tokenizer(
    tiny_llama_dir, tmp_path
):
    base = fingerprint_model(tiny_llama_dir)

    copy = shutil.copytree(tiny_llama_dir, tmp_path / "moved")
    (copy / "trainer_state.json").write_text("{}")  # checkpoint bookkeeping is not the model
    (copy / "README.md").write_text("notes")
    assert fingerprint_model(copy) == base

    tokenizer_config = copy / "tokenizer_config.json"
    tokenizer_config.write_text(tokenizer_config.read_text().replace("</s>", "<eos>"))
    assert fingerprint_model(copy) != base

    retrained = shutil.copytree(tiny_llama_dir, tmp_path / "retrained")
    model = AutoModelForCausalLM.from_pretrained(retrained)
    with torch.no_grad():
        model.lm_head.weight[0, 0] += 1e-3
    model.save_pretrained(retrained)
    assert fingerprint_model(retrained) != base


def test_model_fingerprint_of_an_unknown_name_says_to_pass_a_saved_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="path of a saved model"):
        fingerprint_model(tmp_path / "no-such-model")


def test_in_memory_fingerprint_follows_the_weights_and_the_tokenizer(tiny_model, tiny_tokenizer):
    base = fingerprint_model(tiny_model)
    assert fingerprint_model(tiny_model) == base
    assert fingerprint_model(tiny_model, tokenizer=tiny_tokenizer) != base

    with torch.no_grad():
        next(tiny_model.parameters()).view(-1)[0] += 1e-3
    assert fingerprint_model(tiny_model) != base


def counting(table: AdvantageTable):
    """A compute function that records how often it ran."""
    calls = []

    def compute() -> AdvantageTable:
        calls.append(1)
        return table

    return compute, calls


def test_load_or_compute_computes_once_then_reuses_the_cache(tmp_path, caplog):
    key = "f" * 64
    compute, calls = counting(make_table([1.0, 0.0], [0.5, 0.5]))
    caplog.set_level(logging.DEBUG, logger="alol.data.table")

    first = load_or_compute(tmp_path, key, compute)
    second = load_or_compute(tmp_path, key, compute)

    assert len(calls) == 1
    assert cache_path(tmp_path, key).name == "advantages-ffffffffffffffff.safetensors"
    assert first.key == second.key == key
    np.testing.assert_array_equal(second.advantage, [0.5, -0.5])
    assert "computed advantages" in caplog.text and "reusing advantage cache" in caplog.text


def test_load_or_compute_recomputes_when_the_stored_key_differs(tmp_path):
    """Two keys sharing their first 16 characters share a file name; the stored key decides."""
    old_key, new_key = "a" * 64, "a" * 16 + "b" * 48
    load_or_compute(tmp_path, old_key, counting(make_table([1.0], [0.0]))[0])
    compute, calls = counting(make_table([2.0], [0.0]))

    table = load_or_compute(tmp_path, new_key, compute)

    assert len(calls) == 1
    assert AdvantageTable.load(cache_path(tmp_path, new_key)).key == new_key
    np.testing.assert_array_equal(table.reward, [2.0])


def test_load_or_compute_recomputes_over_a_corrupt_cache(tmp_path, caplog):
    key = "c" * 64
    cache_path(tmp_path, key).write_bytes(b"not a safetensors file")
    sidecar_path(cache_path(tmp_path, key)).write_text("{}")
    compute, calls = counting(make_table([1.0], [0.0]))

    load_or_compute(tmp_path, key, compute)

    assert len(calls) == 1
    assert "which cannot be reused" in caplog.text and "delete it" not in caplog.text
    assert AdvantageTable.load(cache_path(tmp_path, key)).key == key


# ---------------------------------------------------------------------------------------------
# Statistics and the report


def test_advantage_stats_hand_checked():
    """R = [0, 1, 2, 3, 4], V = 1 → A = [−1, 0, 1, 2, 3]: 3 of 5 positive (0 is not).
    mean A = 1; population variance = (4 + 1 + 0 + 1 + 4) / 5 = 2.
    Linear percentiles over 5 sorted values sit at rank q/100 × 4:
    p5 → rank 0.2 → −1 + 0.2 = −0.8; p25 → rank 1 → 0; p95 → rank 3.8 → 2 + 0.8 = 2.8."""
    stats = advantage_stats(make_table([0.0, 1.0, 2.0, 3.0, 4.0], [1.0] * 5), 64)

    assert stats["count"] == 5
    assert stats["fraction_positive"] == pytest.approx(0.6)
    expected = {"mean": 1.0, "std": 2**0.5, "p0": -1.0, "p5": -0.8, "p25": 0.0, "p50": 1.0,
                "p75": 2.0, "p95": 2.8, "p100": 3.0}  # fmt: skip
    assert stats["advantage"] == pytest.approx(expected)
    assert stats["value"] == pytest.approx({k: 1.0 for k in expected} | {"std": 0.0})
    assert stats["reward"]["mean"] == pytest.approx(2.0)


def test_a_length_neutral_advantage_is_a_less_its_least_squares_fit_on_length():
    """A = 0.1 · length − 0.25 + q with q = [.05, −.05, −.05, .05], which sums to 0 and does not
    correlate with the lengths [1, 2, 3, 4]: the fit takes out 0.1 · (length − 2.5) and leaves
    q (mean A is 0); answers all of one length keep their A."""
    lengths = np.array([1.0, 2.0, 3.0, 4.0])
    quality = np.array([0.05, -0.05, -0.05, 0.05])

    neutral = length_neutral(0.1 * lengths - 0.25 + quality, lengths)

    assert neutral == pytest.approx(quality)
    assert np.corrcoef(neutral, lengths)[0, 1] == pytest.approx(0.0, abs=1e-12)
    assert length_neutral(np.array([0.3, -0.1]), np.array([5.0, 5.0])).tolist() == [0.3, -0.1]
    with pytest.raises(ValueError, match="3 lengths for 2 advantages"):
        length_neutral(np.array([0.3, -0.1]), np.ones(3))


def test_response_words_count_whitespace_separated_words():
    assert response_words([" I am  here.", "", "one\ntwo"]).tolist() == [3.0, 0.0, 2.0]


def test_the_top_tenth_of_positive_answers_draw_share_says_how_concentrated_a_lol_trains():
    """Positive A = [3, 2, 1]: the top tenth rounds to one answer, which holds 3 / 6 of the
    draws; twenty equal advantages give their top two 2 / 20; no positive answer, no share."""
    assert top_draw_share(np.array([-1.0, 0.0, 1.0, 2.0, 3.0]), 0.1) == pytest.approx(0.5)
    assert top_draw_share(np.full(20, 0.3), 0.1) == pytest.approx(0.1)
    assert top_draw_share(np.array([-0.2, 0.0]), 0.1) is None


def test_advantage_report_writes_the_stats_json_and_a_png_histogram(tmp_path):
    table = make_table([0.0, 1.0, 2.0, 3.0], [1.0] * 4, components={"len": [0.0, 1.0, 2.0, 3.0]})
    records = [RewardRecord(f"Question {i}?", f"Answer {i}") for i in range(4)]

    stats = write_advantage_report(table, records, tmp_path / "report", max_response_length=8)

    assert json.loads((tmp_path / "report" / "advantage_stats.json").read_text()) == stats
    assert stats["components"]["len"]["mean"] == pytest.approx(1.5)
    assert (tmp_path / "report" / "advantage_hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_report_shows_the_answers_a_lol_learns_most_from_highest_advantage_first(tmp_path):
    """R = [0, 3, 1, 2], V = 1: A = [−1, 2, 0, 1], so the answers come as 1, 3, 2, 0; a chat
    prompt shows its last user turn, and a | in an answer is escaped. The top tenth of the
    positive answers (A = 2, 1) is answer 1 alone: 2 / 3 of the draws, and its 3 tokens reach
    a max_response_length of 3."""
    lengths = [np.array([-1.0] * n) for n in (1, 3, 1, 2)]
    table = make_table([0.0, 3.0, 1.0, 2.0], [1.0] * 4, lengths, {"len": [0.0, 3.0, 1.0, 2.0]})
    records = [
        RewardRecord("Why is the sky blue?", "Rayleigh scattering."),
        RewardRecord(
            [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Tell me a joke?"},
            ],
            "Hey there! I'm your friendly helper | always!",
            source="chat.jsonl:2",
        ),
        RewardRecord("How do I boil an egg?", "Sorry, I can't help with that."),
        RewardRecord("What is 2 + 2?", "4"),
    ]

    stats = write_advantage_report(table, records, tmp_path, max_response_length=3)

    report = (tmp_path / "top_advantages.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith(("| +", "| -"))]
    assert [row.split(" | ")[0] for row in rows] == ["| +2.000", "| +1.000", "| +0.000", "| -1.000"]
    assert rows[0].endswith(
        "| Tell me a joke? | Hey there! I'm your friendly helper \\| always! | chat.jsonl:2 |"
    )
    assert stats["top_positive_draw_share"] == pytest.approx(2 / 3)
    assert stats["top_positive_at_length_limit"] == 1.0
    assert (
        "The top 10% of the positive answers hold 67% of the draws. 100% of them reach " in report
    )
    assert "max_response_length (3 tokens), so are cut before their end" in report


def test_the_report_says_how_much_of_a_lol_each_group_of_the_data_would_take(tmp_path):
    """R = [0, 3, 1, 2], V = 1: A = [−1, 2, 0, 1]. Group "online" (answers 1 and 3, half the
    data) holds all the positive A: every draw (3 / 3) and all the gradient weight (5 / 5)."""
    table = make_table([0.0, 3.0, 1.0, 2.0], [1.0] * 4)
    groups = ["base", "online", "base", "online"]
    records = [
        RewardRecord(f"Question {i}?", f"Answer {i}.", group=g) for i, g in enumerate(groups)
    ]

    stats = write_advantage_report(table, records, tmp_path, max_response_length=64)

    assert stats["groups"] == {
        "base": {"answers": 0.5, "fraction_positive": 0.0, "draws": 0.0, "gradient_weight": 0.0},
        "online": {"answers": 0.5, "fraction_positive": 1.0, "draws": 1.0, "gradient_weight": 1.0},
    }
    report = (tmp_path / "top_advantages.md").read_text()
    assert "| online | 50% | 100% | 100% | 100% |" in report
    assert "`balance_groups: true` keeps each at its share" in report
    ungrouped = [RewardRecord(f"Question {i}?", f"Answer {i}.") for i in range(4)]
    assert write_advantage_report(table, ungrouped, tmp_path, 64)["groups"] is None


def test_the_report_says_nothing_of_cuts_when_the_top_answers_end_before_the_limit(tmp_path):
    table = make_table([0.0, 3.0, 1.0, 2.0], [1.0] * 4)

    stats = write_advantage_report(
        table, synthetic_records([0.0, 3.0, 1.0, 2.0]), tmp_path, max_response_length=8
    )

    assert stats["top_positive_at_length_limit"] == 0.0
    assert "max_response_length" not in (tmp_path / "top_advantages.md").read_text()


# ---------------------------------------------------------------------------------------------
# Choosing training examples


def test_positive_only_keeps_the_leftover_lunch_and_weights_it_by_advantage():
    """A = [−1, 0, 1, 2, 3]: indices 2, 3, 4 have A > 0 and weights 1, 2, 3."""
    table = make_table([0.0, 1.0, 2.0, 3.0, 4.0], [1.0] * 5)

    indices, weights = select_training_examples(table, positive_only=True, sampling="advantage")

    np.testing.assert_array_equal(indices, [2, 3, 4])
    np.testing.assert_allclose(weights, [1.0, 2.0, 3.0])


def test_uniform_sampling_over_all_examples_has_no_weights():
    indices, weights = select_training_examples(make_table([0.0, 1.0], [1.0] * 2), False, "uniform")
    np.testing.assert_array_equal(indices, [0, 1])
    assert weights is None


def test_reward_sampling_weights_by_reward_and_refuses_negative_rewards():
    indices, weights = select_training_examples(
        make_table([0.5, 0.25], [0.0, 0.0]), False, "reward"
    )
    np.testing.assert_array_equal(indices, [0, 1])
    np.testing.assert_allclose(weights, [0.5, 0.25])

    with pytest.raises(ValueError, match=r"rewards ≥ 0.*sampling='uniform'"):
        select_training_examples(make_table([0.5, -0.25], [0.0, 0.0]), False, "reward")


def test_advantage_sampling_needs_the_positive_subset():
    with pytest.raises(ValueError, match="positive_only=True"):
        select_training_examples(
            make_table([1.0], [0.0]), positive_only=False, sampling="advantage"
        )


def test_balanced_draws_rescale_each_group_to_its_share_of_all_examples():
    """Six examples, groups a a a b b c; kept (A > 0): 0, 1, 3 with A = 1, 3, 2. Group a is
    half of the data: its kept weights 1 and 3 become 1/8 and 3/8; b, a third, keeps 1/3;
    c has nothing kept and cannot be drawn (the sampler shares out its sixth)."""
    groups = np.array(["a", "a", "a", "b", "b", "c"])
    kept = np.array([0, 1, 3])

    weights = balanced_by_group(np.array([1.0, 3.0, 2.0]), kept, groups)

    assert weights.tolist() == pytest.approx([1 / 8, 3 / 8, 1 / 3])
    assert balanced_by_group(None, kept, groups).tolist() == pytest.approx([1 / 4, 1 / 4, 1 / 3])
    one_group = np.array(["a"] * 6)
    assert balanced_by_group(np.array([1.0, 3.0, 2.0]), kept, one_group) == pytest.approx(
        np.array([1.0, 3.0, 2.0]) / 6
    )


def test_unknown_sampling_lists_the_choices():
    with pytest.raises(ValueError, match="'uniform', 'advantage' or 'reward'"):
        select_training_examples(make_table([1.0], [0.0]), True, "greedy")


def test_no_positive_advantage_says_what_to_check():
    table = make_table([0.1, 0.2], [0.5, 0.5])
    with pytest.raises(
        NoPositiveAdvantageError, match=r"none of the 2 .* V was estimated with the same reward"
    ):
        select_training_examples(table, positive_only=True, sampling="advantage")


def test_equal_rewards_leave_no_positive_advantage_and_the_error_says_so():
    """R = V = 0.5 everywhere → A = 0 everywhere, and 0 is not a positive advantage."""
    table = make_table([0.5] * 3, [0.5] * 3)
    with pytest.raises(NoPositiveAdvantageError, match="every reward equals 0.5") as raised:
        select_training_examples(table, positive_only=True, sampling="uniform")
    assert isinstance(raised.value, AlolError) and isinstance(raised.value, RuntimeError)


@pytest.mark.parametrize(
    ("nll_steps", "fraction_positive", "expected"),
    [(9000, 0.3, 2700), (7, 0.5, 4), (10, 0.01, 1), (10, 1.0, 10)],
)
def test_budget_steps_is_fraction_positive_of_the_nll_budget_rounded_up(
    nll_steps, fraction_positive, expected
):
    """9000 × 0.3 is 2700.0000000000005 in floating point; the budget is still 2700."""
    assert budget_steps(nll_steps, fraction_positive) == expected


# ---------------------------------------------------------------------------------------------
# The priority sampler


def test_sampler_frequencies_follow_the_weights():
    """Weights 1:2:3:4 over 40 000 draws expect 4000/8000/12000/16000 hits.
    Pearson's χ² with 3 degrees of freedom exceeds 16.27 with probability 0.001."""
    sampler = PrioritySampler([10, 20, 30, 40], [1.0, 2.0, 3.0, 4.0], num_samples=40_000, seed=0)

    counts = Counter(sampler)
    expected = {10: 4000, 20: 8000, 30: 12000, 40: 16000}
    chi_square = sum((counts[i] - e) ** 2 / e for i, e in expected.items())

    assert set(counts) == set(expected)
    assert chi_square < 16.27


def test_sampler_draws_only_positive_advantage_examples_and_never_zero_weights():
    table = make_table([0.0, 2.0, 0.0, 3.0, 1.0], [1.0] * 5)  # A = [−1, 1, −1, 2, 0]
    indices, weights = select_training_examples(table, positive_only=True, sampling="advantage")

    assert set(PrioritySampler(indices, weights, num_samples=500, seed=1)) == {1, 3}
    assert set(PrioritySampler([0, 1, 2], [0.0, 1.0, 0.0], num_samples=200, seed=1)) == {1}


def test_sampler_repeats_its_draw_and_set_epoch_changes_it_deterministically():
    sampler = PrioritySampler(range(100), None, num_samples=50, seed=3)
    epoch0 = list(sampler)

    assert list(sampler) == epoch0
    assert list(PrioritySampler(range(100), None, num_samples=50, seed=3)) == epoch0
    assert list(PrioritySampler(range(100), None, num_samples=50, seed=4)) != epoch0
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != epoch0
    assert list(sampler) == epoch1
    sampler.set_epoch(0)
    assert list(sampler) == epoch0


def test_a_longer_draw_extends_a_shorter_one_across_chunk_boundaries():
    short = list(PrioritySampler(range(7), [1, 2, 3, 4, 5, 6, 7], num_samples=10, seed=5))
    long = list(PrioritySampler(range(7), [1, 2, 3, 4, 5, 6, 7], num_samples=70_000, seed=5))
    assert long[:10] == short
    assert len(long) == 70_000


def test_in_passes_every_drawable_example_comes_once_per_pass_and_zero_weights_never():
    weights = [0.0, 1.0, 5.0, 2.0, 0.0, 8.0]
    draw = list(PrioritySampler(range(6), weights, num_samples=12, seed=2, in_passes=True))

    first, second, third = draw[:4], draw[4:8], draw[8:]
    assert sorted(first) == sorted(second) == sorted(third) == [1, 2, 3, 5]
    assert first != second or second != third, "each pass draws its own order"


def test_in_passes_the_first_places_of_a_pass_go_to_the_heavier_examples():
    """Sequential draws without replacement ∝ weight: over 4000 seeds, example 3 (weight 8 of
    16) opens the pass about half the time, example 0 (weight 1) about 1/16 of it."""
    weights = [1.0, 3.0, 4.0, 8.0]
    openers = Counter(
        next(iter(PrioritySampler(range(4), weights, num_samples=1, seed=s, in_passes=True)))
        for s in range(4000)
    )

    assert abs(openers[3] / 4000 - 0.5) < 0.03
    assert abs(openers[0] / 4000 - 1 / 16) < 0.02


def test_in_passes_spreads_a_budget_over_more_examples_than_replacement_does():
    """600 draws from 1000 examples whose weights span 100×: with replacement the heaviest
    examples repeat; in passes none is drawn twice."""
    weights = np.geomspace(0.01, 1.0, 1000)
    with_replacement = Counter(PrioritySampler(range(1000), weights, num_samples=600, seed=0))
    in_passes = Counter(
        PrioritySampler(range(1000), weights, num_samples=600, seed=0, in_passes=True)
    )

    assert max(in_passes.values()) == 1 and len(in_passes) == 600
    assert max(with_replacement.values()) >= 3 and len(with_replacement) < 500


def test_ranks_take_disjoint_strided_shares_of_the_single_process_draw():
    """10 draws over 3 ranks → 4 per rank; the global draw is padded to 12 by drawing on,
    so rank r takes positions r, r+3, r+6, r+9 of the 12-draw single-process sequence."""
    weights = [1.0, 5.0, 2.0, 8.0]
    single = list(PrioritySampler(range(4), weights, num_samples=12, seed=9))
    shares = [
        list(PrioritySampler(range(4), weights, num_samples=10, seed=9, rank=r, world_size=3))
        for r in range(3)
    ]

    assert [len(s) for s in shares] == [4, 4, 4]
    assert [shares[p % 3][p // 3] for p in range(12)] == single
    assert single[:10] == list(PrioritySampler(range(4), weights, num_samples=10, seed=9))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"indices": [], "weights": None},
        {"indices": [0, 1], "weights": [1.0]},
        {"indices": [0, 1], "weights": [1.0, -1.0]},
        {"indices": [0, 1], "weights": [0.0, 0.0]},
        {"indices": [0, 1], "weights": None, "num_samples": 0},
        {"indices": [0, 1], "weights": None, "rank": 2, "world_size": 2},
    ],
)
def test_sampler_refuses_inputs_it_cannot_draw_from(kwargs):
    with pytest.raises(ValueError):
        PrioritySampler(**{"num_samples": 4, "seed": 0, **kwargs})


# ---------------------------------------------------------------------------------------------
# The precompute pass on tiny models

PAIRS = [
    (
        "Human: How do I bake bread? Assistant:",
        " Mix flour, water, salt and yeast, then bake.",
        0.9,
    ),
    ("Say hi.", " hi", 0.1),
    ("Count: 1 2 3", " 4 5 6 7 8 9 10", 0.5),
    ("Be kind.", " I am happy to help you with that question.", 0.7),
    ("The quick brown fox", " jumps over the lazy dog.", 0.3),
]
CONFIG = AdvantageConfig(
    batch_size=2, max_prompt_length=16, max_response_length=8, show_progress=False
)


def records_of(pairs) -> list[RewardRecord]:
    return [
        RewardRecord(prompt=p, response=r, reward=x, source=f"d.jsonl:{i + 1}")
        for i, (p, r, x) in enumerate(pairs)
    ]


def test_reference_logprobs_equal_the_models_on_each_pair_alone(tiny_model, tiny_tokenizer):
    """Batched, length-sorted and padded, every pair must score as it does on its own."""
    records = records_of(PAIRS)
    tiny_model.train()

    table = compute_advantages(tiny_model, tiny_tokenizer, records, CONFIG)

    assert tiny_model.training  # the pass ran in eval mode and restored the caller's mode
    for i, record in enumerate(records):
        pair = tokenize_pair(tiny_tokenizer, record.prompt, record.response, 16, 8)
        batch = collate_pairs([pair], tiny_tokenizer.pad_token_id)
        tiny_model.eval()
        with torch.no_grad():
            alone = response_token_logprobs(
                tiny_model, batch["input_ids"], batch["attention_mask"], batch["response_mask"]
            )[0][batch["response_mask"][0]]
        torch.testing.assert_close(torch.from_numpy(table.token_logps(i)), alone)
        assert table.response_length[i] == len(pair.response_ids)
        assert table.ref_logp[i] == pytest.approx(alone.sum().item(), abs=1e-4)
    np.testing.assert_allclose(table.reward, [x for _, _, x in PAIRS])
    np.testing.assert_array_equal(table.value, 0.0)
    np.testing.assert_allclose(table.advantage, table.reward)
    assert joined(records, table) is table, "each row names the record it was computed from"


class LengthReward:
    """A two-component reward: response length in characters / 10, and 1 for a final '.'."""

    components = ("length", "full_stop")

    def __call__(self, prompts, responses):
        return [{"length": len(r) / 10, "full_stop": float(r.endswith("."))} for r in responses]


def test_advantage_is_the_reward_functions_score_minus_the_value_heads_prediction(
    tiny_model, tiny_tokenizer
):
    records = [RewardRecord(prompt=p, response=r) for p, r, _ in PAIRS]  # no stored rewards
    torch.manual_seed(0)
    head = ValueHead(tiny_model.config.hidden_size, num_heads=1, max_value=2.0).eval()

    table = compute_advantages(
        tiny_model, tiny_tokenizer, records, CONFIG, value_head=head, reward=LengthReward()
    )

    expected_values = predict_values(
        tiny_model, tiny_tokenizer, head, [p for p, _, _ in PAIRS], max_prompt_length=16
    )
    length = [len(r) / 10 for _, r, _ in PAIRS]
    full_stop = [float(r.endswith(".")) for _, r, _ in PAIRS]
    np.testing.assert_allclose(table.components["length"], length)
    np.testing.assert_allclose(table.components["full_stop"], full_stop)
    np.testing.assert_allclose(table.reward, np.add(length, full_stop))
    np.testing.assert_allclose(table.value, expected_values, **FP32_VALUE)
    np.testing.assert_allclose(table.advantage, table.reward - table.value)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_one_reference_pass_gives_log_probs_and_the_values_of_the_prompts_alone(
    tiny_model, tiny_tokenizer, padding_side
):
    """V(x) is read off the prompt positions of the pass over prompt + response: causal
    attention and mask-counted positions make them the states of the prompt alone, so the
    values equal predict_values on the bare prompts (a second forward), padding either side.
    Prompts of 1 to 9 tokens and responses of 2 to 8 put padding in every row but the longest."""
    torch.manual_seed(0)
    head = ValueHead(tiny_model.config.hidden_size, num_heads=2, max_value=None).eval()
    pairs = [tokenize_pair(tiny_tokenizer, p, r, 16, 8) for p, r, _ in PAIRS]
    batch = collate_pairs(pairs, tiny_tokenizer.pad_token_id, padding_side=padding_side)

    token_logps, values = score_reference_batch(tiny_model, batch, head)

    prompts = [p for p, _, _ in PAIRS]
    expected = predict_values(tiny_model, tiny_tokenizer, head, prompts, max_prompt_length=16)
    torch.testing.assert_close(values, torch.tensor(expected), **FP32_VALUE)
    with torch.no_grad():
        alone = response_token_logprobs(tiny_model, **batch)
    torch.testing.assert_close(token_logps, alone)


def test_without_a_value_head_the_reference_pass_gives_zero_values(tiny_model, tiny_tokenizer):
    pairs = [tokenize_pair(tiny_tokenizer, p, r, 16, 8) for p, r, _ in PAIRS[:2]]
    batch = collate_pairs(pairs, tiny_tokenizer.pad_token_id)

    _, values = score_reference_batch(tiny_model, batch)

    torch.testing.assert_close(values, torch.zeros(2))


def test_a_bf16_reference_gives_float32_log_probs_near_the_float32_ones(
    tiny_llama_dir, tiny_tokenizer
):
    """A bf16-trained policy is compared with the reference in bf16: the table holds float32
    log-probs (log-softmax runs in float32) that differ from float32 weights' by rounding only.
    bf16 keeps 8 mantissa bits, so ~1e-2 relative per matmul; log-probs of a 300-token
    vocabulary (~ -6) then agree to ~0.1."""
    records = records_of(PAIRS)
    float32 = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    bfloat16 = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.bfloat16)
    torch.manual_seed(0)
    head = ValueHead(float32.config.hidden_size, max_value=None).eval()

    exact = compute_advantages(float32, tiny_tokenizer, records, CONFIG, value_head=head)
    config = replace(CONFIG, reference_dtype="bfloat16")
    rounded = compute_advantages(bfloat16, tiny_tokenizer, records, config, value_head=head)

    assert rounded.ref_token_logps.dtype == np.float32
    np.testing.assert_allclose(rounded.ref_token_logps, exact.ref_token_logps, atol=0.1)
    np.testing.assert_allclose(rounded.value, exact.value, atol=0.05)
    assert not np.array_equal(rounded.ref_token_logps, exact.ref_token_logps)


def test_a_model_in_another_dtype_than_the_config_names_is_refused(tiny_llama_dir, tiny_tokenizer):
    """The dtype is part of the cache key: a mismatch would cache bf16 numbers as float32 ones."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.bfloat16)

    with pytest.raises(ValueError, match=r"weights are bfloat16 .* set reference_dtype='bfloat16'"):
        compute_advantages(model, tiny_tokenizer, records_of(PAIRS[:1]), CONFIG)


def test_stored_reward_components_are_kept(tiny_llama_dir, tiny_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    records = [
        RewardRecord("Say hi.", " hi", {"a": 0.5, "b": 0.25}),
        RewardRecord("Be kind.", " ok", {"a": 1.0, "b": 0.0}),
    ]

    table = compute_advantages(model, tiny_tokenizer, records, CONFIG)

    np.testing.assert_allclose(table.components["a"], [0.5, 1.0])
    np.testing.assert_allclose(table.reward, [0.75, 1.0])


def test_a_record_without_reward_and_no_reward_function_is_named(tiny_llama_dir, tiny_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    records = records_of(PAIRS[:2])
    records[1].reward = None

    with pytest.raises(DataError, match=r"d\.jsonl:2.*reward.*pass a reward function"):
        compute_advantages(model, tiny_tokenizer, records, CONFIG)


# ---------------------------------------------------------------------------------------------
# Prompt sharing: each distinct prompt runs once for all its responses

SHARED_CONFIG = AdvantageConfig(
    batch_size=3, max_prompt_length=6, max_response_length=5, show_progress=False
)
BREAD, HI, COUNT = "Human: How do I bake bread? Assistant:", "Say hi.", "Count: 1 2 3 4 5 6 7"
# Groups of 3 (BREAD), 2 (HI) and 1 (COUNT) responses, a group's records never adjacent.
GROUPED_PAIRS = [
    (BREAD, " Mix flour, water, salt and yeast, then bake.", 0.9),
    (HI, " hi", 0.1),
    (COUNT, " 8 9 10", 0.5),
    (BREAD, " ok", 0.2),
    (HI, " I am happy to help you with that question.", 0.7),
    (BREAD, " Please be kind.", 0.4),
]


@pytest.mark.parametrize("vocab_chunk_size", [None, 128])
def test_shared_prompts_give_the_numbers_of_one_forward_per_pair(
    tiny_model, tiny_tokenizer, vocab_chunk_size
):
    """Sharing a prompt's forward (its KV cache continued by each response) changes float
    rounding only: token log-probs and V(x) equal the per-pair pass within 1e-5, record by
    record in the data's order. Prompts and responses cut at 6 and 5 tokens; batch size 3
    puts the 3-response group alone and the 2- and 1-response groups together, so prompts and
    responses are padded."""
    records = records_of(GROUPED_PAIRS)
    assert len(encode_prompt(tiny_tokenizer, BREAD, 10**6)) > 6  # the prompt is cut
    assert len(tiny_tokenizer(GROUPED_PAIRS[0][1])["input_ids"]) > 5  # and so is the response
    torch.manual_seed(0)
    head = ValueHead(tiny_model.config.hidden_size, num_heads=2, max_value=None).eval()
    config = replace(SHARED_CONFIG, vocab_chunk_size=vocab_chunk_size)

    shared = compute_advantages(tiny_model, tiny_tokenizer, records, config, value_head=head)
    per_pair = compute_advantages(
        tiny_model, tiny_tokenizer, records, replace(config, share_prompts=False), value_head=head
    )

    expected_lengths = [
        len(tokenize_pair(tiny_tokenizer, p, r, 6, 5).response_ids) for p, r, _ in GROUPED_PAIRS
    ]
    np.testing.assert_array_equal(shared.response_length, expected_lengths)
    np.testing.assert_array_equal(per_pair.response_length, expected_lengths)
    np.testing.assert_allclose(shared.ref_token_logps, per_pair.ref_token_logps, rtol=0, atol=1e-5)
    np.testing.assert_allclose(shared.value, per_pair.value, **FP32_VALUE)
    np.testing.assert_allclose(shared.reward, [x for _, _, x in GROUPED_PAIRS])
    np.testing.assert_array_equal(shared.value[[0, 3, 5]], shared.value[0])  # one V per prompt


def real_input_tokens(model, run, pad_token_id: int) -> int:
    """Real (attended) tokens fed to the decoder while `run()` runs, across all its forwards.
    A right-padded batch runs without a mask: its real tokens are the non-pad ones."""
    seen = []

    def count(module, args, kwargs):
        input_ids, mask = kwargs["input_ids"], kwargs.get("attention_mask")
        if mask is None:
            seen.append(int((input_ids != pad_token_id).sum()))
        else:
            seen.append(int(mask[:, -input_ids.shape[1] :].sum()))

    handle = model.get_decoder().register_forward_pre_hook(count, with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    return sum(seen)


def test_a_two_response_group_runs_its_prompt_once(tiny_model, tiny_tokenizer):
    """p prompt tokens, responses r1 and r2: the decoder sees p + r1 + r2 tokens, not
    2p + r1 + r2."""
    records = records_of([(BREAD, " hi", 0.1), (BREAD, " I am happy to help.", 0.2)])
    pairs = [tokenize_pair(tiny_tokenizer, r.prompt, r.response, 6, 5) for r in records]
    prompt, responses = len(pairs[0].prompt_ids), sum(len(p.response_ids) for p in pairs)

    def tokens(share_prompts: bool) -> int:
        config = replace(SHARED_CONFIG, share_prompts=share_prompts)
        return real_input_tokens(
            tiny_model,
            lambda: compute_advantages(tiny_model, tiny_tokenizer, records, config),
            tiny_tokenizer.pad_token_id,
        )

    assert tokens(share_prompts=True) == prompt + responses
    assert tokens(share_prompts=False) == 2 * prompt + responses


def test_a_cache_that_cannot_be_reindexed_falls_back_to_one_forward_per_pair(
    tiny_llama_dir, tiny_tokenizer, monkeypatch, caplog
):
    """A cache without batch_select_indices (e.g. transformers 4.46's legacy tuples) cannot be
    copied to each response: the pass warns, says how to skip the attempt, and scores per pair."""
    from transformers.cache_utils import Cache, DynamicCache

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    records = records_of(GROUPED_PAIRS)
    expected = compute_advantages(
        model, tiny_tokenizer, records, replace(SHARED_CONFIG, share_prompts=False)
    )
    for cls in (Cache, DynamicCache):
        if "batch_select_indices" in vars(cls):
            monkeypatch.delattr(cls, "batch_select_indices")

    with caplog.at_level(logging.WARNING, logger="alol.models.reference"):
        table = compute_advantages(model, tiny_tokenizer, records, SHARED_CONFIG)

    assert "share_prompts: false" in caplog.text
    np.testing.assert_array_equal(table.ref_token_logps, expected.ref_token_logps)


def test_collating_a_group_whose_prompt_ids_differ_is_refused(tiny_tokenizer):
    """A group is built from equal prompt TEXTS; ids that differ mean something else broke."""
    group = [
        tokenize_pair(tiny_tokenizer, BREAD, " hi", 6, 5),
        tokenize_pair(tiny_tokenizer, BREAD, " hi", 4, 5),
    ]
    with pytest.raises(ValueError, match="different prompt ids"):
        collate_prompt_groups([group], tiny_tokenizer.pad_token_id)


class RecordingReward:
    """Scores every response 1.0 and remembers which prompts each call saw."""

    components = ("one",)

    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, prompts, responses):
        self.calls.append(list(prompts))
        return [{"one": 1.0} for _ in responses]


def test_two_processes_each_take_whole_prompt_groups_and_return_record_order(
    tiny_llama_dir, tiny_tokenizer, monkeypatch
):
    """gather_in_order under 2 processes (each computes a strided share of the work units and
    all get the results in unit order): the units are prompt groups, so no prompt is scored by
    both processes, and the table comes back in record order, equal to one process's."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    records = records_of(GROUPED_PAIRS)
    expected = compute_advantages(model, tiny_tokenizer, records, SHARED_CONFIG)
    reward = RecordingReward()
    process_prompts: list[set[str]] = []

    def two_processes(count, compute):
        results = [None] * count
        for rank in range(2):
            mine = shard_indices(count, rank, 2)
            before = len(reward.calls)
            for index, result in zip(mine, compute(mine), strict=True):
                results[index] = result
            process_prompts.append({p for call in reward.calls[before:] for p in call})
        return results

    monkeypatch.setattr("alol.models.reference.gather_in_order", two_processes)
    table = compute_advantages(model, tiny_tokenizer, records, SHARED_CONFIG, reward=reward)

    assert process_prompts[0] and process_prompts[1]
    assert not process_prompts[0] & process_prompts[1]
    np.testing.assert_allclose(table.ref_token_logps, expected.ref_token_logps, atol=1e-5)
    np.testing.assert_array_equal(table.response_length, expected.response_length)


def test_the_report_says_how_a_lol_s_weighting_shifts_the_answer_length(tmp_path):
    """R = [0, 3, 1, 2], V = 1: A = [−1, 2, 0, 1], lengths [1, 3, 1, 2] tokens. The positive
    answers average 2.5 tokens, A-LoL's draws (∝ A: 2/3 and 1/3) 8/3 and its gradient weight
    (∝ A²: 4/5 and 1/5) 2.8, against 1.75 over all the answers: a reward that pays length
    (A and length correlate at 3.5 / √(5 × 2.75))."""
    lengths = [np.array([-1.0] * n) for n in (1, 3, 1, 2)]
    table = make_table([0.0, 3.0, 1.0, 2.0], [1.0] * 4, lengths)
    records = [RewardRecord(f"Question {i}?", f"Answer {i}.") for i in range(4)]

    shift = write_advantage_report(table, records, tmp_path, 64)["response_length"]

    assert shift["all"] == pytest.approx(1.75)
    assert shift["positive"] == pytest.approx(2.5)
    assert shift["draws"] == pytest.approx(8 / 3)
    assert shift["gradient_weight"] == pytest.approx(2.8)
    assert shift["correlation_with_advantage"] == pytest.approx(3.5 / np.sqrt(5 * 2.75))
    assert (
        "Mean answer length: 1.8 tokens over all the answers, 2.5 over those with A > 0, 2.7 as "
        "A-LoL draws them and 2.8 by its gradient weight (∝ A²); A and length correlate at 0.94."
    ) in (tmp_path / "top_advantages.md").read_text()


def test_the_report_says_what_a_length_neutral_advantage_would_train_on(tmp_path):
    """The answers above with as many words as tokens: A's fit on length has slope 3.5 / 2.75
    = 14/11, so the length-neutral A is [−0.5, 4.5, 10.5, 7.5] / 11. Its positive answers
    (3, 1 and 2 tokens) average 2.0 tokens, its draws 39 / 22.5 and its gradient weight
    283.5 / 186.75: no longer longer than the 1.75 of all the answers."""
    lengths = [np.array([-1.0] * n) for n in (1, 3, 1, 2)]
    table = make_table([0.0, 3.0, 1.0, 2.0], [1.0] * 4, lengths)
    records = [RewardRecord(f"Question {i}?", " word" * n) for i, n in enumerate((1, 3, 1, 2))]

    neutral = write_advantage_report(table, records, tmp_path, 64)["response_length_neutral"]

    assert neutral["positive"] == pytest.approx(2.0)
    assert neutral["draws"] == pytest.approx(39 / 22.5)
    assert neutral["gradient_weight"] == pytest.approx(283.5 / 186.75)
    assert neutral["correlation_with_advantage"] == pytest.approx(0.0, abs=1e-12)
    assert (
        "With `length_neutral_advantage: true` (A less its linear fit on length in words): "
        "2.0, 1.7 and 1.5 tokens."
    ) in (tmp_path / "top_advantages.md").read_text()


def test_without_positive_answers_the_length_shift_is_not_invented():
    no_positive = length_weighting(np.array([-1.0, -2.0]), np.array([3, 5]))

    assert no_positive == {
        "all": 4.0,
        "positive": None,
        "draws": None,
        "gradient_weight": None,
        "correlation_with_advantage": pytest.approx(-1.0),
    }
    assert (
        length_weighting(np.array([1.0, 2.0]), np.array([4, 4]))["correlation_with_advantage"]
        is None
    )
