"""Evaluation metrics and reports, checked against arithmetic done by hand."""

from __future__ import annotations

import json
import logging

import pytest

from alol.reports.eval_report import (
    EvalExample,
    EvalReport,
    changes_from_reference,
    comparison_table,
    evaluate_responses,
    read_report,
    warn_on_prompt_overlap,
    write_report,
)
from alol.reports.group_report import group_table
from alol.reports.metrics import distinct_n, mean_length, win_rate

PROMPTS = ["p1", "p2", "p3", "p4"]
RESPONSES = ["a b a b", "a b c", "hello", ""]
SCORES = [
    {"sentiment": 0.5, "fluency": 0.25, "total": 0.75},
    {"sentiment": 1.0, "fluency": 0.0, "total": 1.0},
    {"sentiment": 0.0, "fluency": 0.5, "total": 0.5},
    {"sentiment": 0.5, "fluency": 0.25, "total": 0.75},
]
REFERENCE = [{"sentiment": 0.0, "fluency": 0.0, "total": 0.5}] * 3 + [
    {"sentiment": 0.0, "fluency": 0.0, "total": 1.0}
]


def test_distinct_n_counts_unique_ngrams_over_the_whole_corpus():
    """Unigrams: a b a b | a b c | hello -> 8 total, {a, b, c, hello} = 4 unique -> 0.5.
    Bigrams: ab ba ab | ab bc -> 5 total, {ab, ba, bc} = 3 unique -> 0.6 (none span two texts).
    Trigrams: aba bab | abc -> 3 total, all unique -> 1.0."""
    assert distinct_n(RESPONSES, 1) == pytest.approx(4 / 8)
    assert distinct_n(RESPONSES, 2) == pytest.approx(3 / 5)
    assert distinct_n(RESPONSES, 3) == pytest.approx(3 / 3)


def test_distinct_n_is_zero_without_ngrams():
    assert distinct_n([], 1) == 0.0
    assert distinct_n(["one two", ""], 3) == 0.0


def test_mean_length_in_words_and_in_tokens(tiny_tokenizer):
    """Words: (4 + 3 + 1 + 0) / 4 = 2.0."""
    assert mean_length(RESPONSES) == pytest.approx(2.0)
    token_counts = [
        len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"]) for text in RESPONSES
    ]
    assert mean_length(RESPONSES, tiny_tokenizer) == pytest.approx(sum(token_counts) / 4)
    assert mean_length([]) == 0.0


def test_win_rate_counts_ties_as_half():
    """Outcomes: win, tie, loss, tie -> (1 + 0.5 + 0 + 0.5) / 4 = 0.5."""
    assert win_rate([2.0, 1.0, 0.0, 3.0], [1.0, 1.0, 1.0, 3.0]) == pytest.approx(0.5)
    assert win_rate([1.0], [0.0]) == 1.0


def test_win_rate_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="one reference score per score"):
        win_rate([1.0, 2.0], [1.0])


def test_evaluate_responses_summarises_rewards_diversity_length_and_win_rate():
    """sentiment: mean (0.5+1+0+0.5)/4 = 0.5, std sqrt((0+0.25+0.25+0)/4) = sqrt(0.125);
    total: mean (0.75+1+0.5+0.75)/4 = 0.75; vs reference totals 0.5,0.5,0.5,1.0:
    win, win, tie, loss -> (1 + 1 + 0.5 + 0) / 4 = 0.625."""
    report = evaluate_responses(PROMPTS, RESPONSES, SCORES, REFERENCE)

    assert report.n == 4
    assert report.reward_mean == pytest.approx({"sentiment": 0.5, "fluency": 0.25, "total": 0.75})
    assert report.reward_std["sentiment"] == pytest.approx(0.125**0.5)
    assert (report.distinct_1, report.distinct_2, report.distinct_3) == pytest.approx(
        (0.5, 0.6, 1.0)
    )
    assert report.mean_length_words == pytest.approx(2.0)
    assert report.mean_length_tokens is None
    assert report.win_rate == pytest.approx(0.625)
    assert report.examples[1] == EvalExample(prompt="p2", response="a b c", scores=SCORES[1])


def test_evaluate_responses_sums_components_when_total_is_missing():
    report = evaluate_responses(["p"], ["r"], [{"a": 1.0, "b": 2.0}])
    assert report.reward_mean == {"a": 1.0, "b": 2.0, "total": 3.0}
    assert report.win_rate is None


def test_evaluate_responses_rejects_inconsistent_inputs():
    with pytest.raises(ValueError, match="one response and one score dict per prompt"):
        evaluate_responses(PROMPTS, RESPONSES[:2], SCORES)
    with pytest.raises(ValueError, match=r"scores\[1\] has components"):
        evaluate_responses(["p", "q"], ["r", "s"], [{"a": 1.0}, {"b": 1.0}])


def test_write_report_writes_readable_json_jsonl_and_markdown(tmp_path):
    report = evaluate_responses(PROMPTS, RESPONSES, SCORES, REFERENCE)

    write_report(report, tmp_path / "eval", title="A-LoL on the demo task")

    summary = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert summary["win_rate"] == pytest.approx(0.625)
    assert "examples" not in summary
    lines = (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()
    assert [json.loads(line)["response"] for line in lines] == RESPONSES
    markdown = (tmp_path / "eval" / "report.md").read_text()
    assert markdown.startswith("# A-LoL on the demo task")
    assert "| reward/sentiment | 0.5000 ± 0.3536 |" in markdown
    assert "| win-rate vs reference | 0.6250 |" in markdown
    assert "```text\na b c\n```" in markdown
    assert read_report(tmp_path / "eval") == report
    assert not list((tmp_path / "eval").glob(".*.tmp")), "atomic writes leave no temporary files"


def test_report_markdown_fences_survive_backticks_in_responses(tmp_path):
    report = evaluate_responses(["p"], ["use ```code``` here"], [{"r": 1.0}])
    write_report(report, tmp_path, title="t")
    assert "````text\nuse ```code``` here\n````" in (tmp_path / "report.md").read_text()


def test_comparison_table_has_one_row_per_run():
    nll = evaluate_responses(PROMPTS, RESPONSES, SCORES)
    a_lol = EvalReport(
        n=4,
        reward_mean={"sentiment": 0.9, "total": 0.9},
        reward_std={"sentiment": 0.1, "total": 0.1},
        distinct_1=0.7,
        distinct_2=0.8,
        distinct_3=0.9,
        mean_length_words=12.0,
        win_rate=0.75,
    )

    table = comparison_table({"nll": nll, "a_lol": a_lol}).splitlines()

    assert table[0] == (
        "| model | sentiment | fluency | reward | win-rate vs π_ref | distinct-2 "
        "| one answer's share | length (words) |"
    )
    assert table[2] == "| nll | 0.500 | 0.250 | **0.750** | – | 0.600 | 25% | 2.0 |"
    assert table[3] == "| a_lol | 0.900 | – | **0.900** | 0.75 | 0.800 | – | 12.0 |"


def test_comparison_table_gives_a_single_component_reward_one_column():
    report = evaluate_responses(PROMPTS, RESPONSES, [{"reward": 0.5}, {"reward": 0.7}] * 2)

    lines = comparison_table({"nll": report}).splitlines()

    assert lines[0] == (
        "| model | reward | win-rate vs π_ref | distinct-2 | one answer's share | length (words) |"
    )
    assert lines[2].startswith("| nll | **0.600** |")


def test_comparison_table_names_the_reference_and_adds_the_kept_share_when_given():
    report = evaluate_responses(PROMPTS, RESPONSES, SCORES)

    table = comparison_table({"reference": report, "a_lol": report}, kept={"a_lol": 0.29})
    lines = table.splitlines()

    assert lines[0].endswith("| length (words) | data kept |")
    assert lines[2].startswith("| π_ref (reference) |") and lines[2].endswith("| – |")
    assert lines[3].endswith("| 29% |")


def test_judges_get_a_column_with_their_change_and_a_win_rate_against_the_reference():
    """Reference judge scores 0.5, 0.5, 0.5, 0.5; the model's 1, 0, 0, 0: mean 0.25 (−0.25,
    differences +0.5, −0.5, −0.5, −0.5 with a standard error of 0.25, so a reader sees it is
    within noise), win-rate (1 + 0 + 0 + 0) / 4 = 0.25. Reward totals 0.75 vs 0.75: +0.000."""
    reference = evaluate_responses(PROMPTS, RESPONSES, SCORES, judges={"relevance": [0.5] * 4})
    model = evaluate_responses(
        PROMPTS,
        RESPONSES,
        SCORES,
        reference_scores=SCORES,
        judges={"relevance": [1.0, 0.0, 0.0, 0.0]},
        reference_judges={"relevance": [0.5] * 4},
    )

    lines = comparison_table({"reference": reference, "a_lol": model}).splitlines()

    assert lines[0] == (
        "| model | sentiment | fluency | reward | relevance | win-rate vs π_ref "
        "| relevance win-rate | distinct-2 | one answer's share | length (words) |"
    )
    assert lines[2] == (
        "| π_ref (reference) | 0.500 | 0.250 | **0.750** | 0.500 | – | – | 0.600 | 25% | 2.0 |"
    )
    assert lines[3] == (
        "| a_lol | 0.500 | 0.250 | **0.750** (+0.000 ± 0.000) | 0.250 (−0.250 ± 0.250) | 0.50 | 0.25 "
        "| 0.600 | 25% | 2.0 |"
    )
    assert model.examples[0].judges == {"relevance": 1.0}


def test_the_reward_change_carries_the_standard_error_of_its_per_prompt_differences():
    """Differences 0.1, 0.2, 0.0, 0.1: mean 0.1, sample sd 0.0816, standard error 0.041, so a
    reader sees that +0.100 is more than two standard errors from no change."""
    reference = evaluate_responses(PROMPTS, RESPONSES, [{"r": 0.5}] * 4)
    model = evaluate_responses(
        PROMPTS,
        RESPONSES,
        [{"r": 0.6}, {"r": 0.7}, {"r": 0.5}, {"r": 0.6}],
        reference_scores=[{"r": 0.5}] * 4,
    )

    assert model.reward_change_se == pytest.approx(0.0408, abs=1e-4)
    row = comparison_table({"reference": reference, "a_lol": model}).splitlines()[3]
    assert row.startswith("| a_lol | **0.600** (+0.100 ± 0.041) | 0.88 |")


def test_each_models_change_on_the_reward_and_every_judge_is_paired_by_prompt():
    """Reward differences 0.1, 0.2, 0.0, 0.1 (mean 0.1, se 0.041); judge differences
    +0.5, −0.5, −0.5, −0.5 (mean −0.25, sample sd 0.5, se 0.25): a reward gain the judge
    does not share, which `reward_vs_judges.png` draws right of 0 and below it."""
    reference = evaluate_responses(
        PROMPTS, RESPONSES, [{"r": 0.5}] * 4, judges={"relevance": [0.5] * 4}
    )
    model = evaluate_responses(
        PROMPTS,
        RESPONSES,
        [{"r": 0.6}, {"r": 0.7}, {"r": 0.5}, {"r": 0.6}],
        reference_scores=[{"r": 0.5}] * 4,
        judges={"relevance": [1.0, 0.0, 0.0, 0.0]},
        reference_judges={"relevance": [0.5] * 4},
    )

    changes = changes_from_reference({"reference": reference, "a_lol": model})

    assert list(changes) == ["a_lol"], "π_ref is the origin, not a point"
    assert changes["a_lol"]["reward"] == pytest.approx((0.1, 0.0408), abs=1e-4)
    assert changes["a_lol"]["relevance"] == pytest.approx((-0.25, 0.25))


def test_changes_are_refused_for_answers_to_other_prompts():
    reference = evaluate_responses(PROMPTS, RESPONSES, SCORES)
    model = evaluate_responses(["q1", "q2", "q3", "q4"], RESPONSES, SCORES)

    with pytest.raises(ValueError, match="a_lol's report answers other prompts than π_ref's"):
        changes_from_reference({"reference": reference, "a_lol": model})


def test_prompt_overlap_is_counted_and_warned(caplog):
    with caplog.at_level(logging.WARNING, logger="alol.reports.eval_report"):
        overlap = warn_on_prompt_overlap(
            ["a  b", "c", "d"], ["a b", "d", "x"], "value-head prompts"
        )
    assert overlap == 2
    assert "2 of 3 evaluation prompts also appear in the value-head prompts" in caplog.text


def test_disjoint_prompts_raise_no_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="alol.reports.eval_report"):
        assert warn_on_prompt_overlap(["a"], ["b"], "validation prompts") == 0
    assert caplog.records == []


def test_the_report_counts_empty_and_cut_off_answers():
    report = evaluate_responses(
        ["a", "b", "c", "d"],
        ["", "  ", "fine", "long and cut"],
        [{"total": 0.5}] * 4,
        finished=[True, True, True, False],
    )
    assert report.empty_share == 0.5 and report.cut_off_share == 0.25


GROUPS = ["harmful", "helpful", "harmful", "helpful"]


def grouped_reports() -> dict[str, EvalReport]:
    """π_ref and a model on two groups of prompts: the model gains reward on both, but its
    judge falls on the harmful prompts and rises on the helpful ones."""
    reference = evaluate_responses(
        PROMPTS,
        ["no", "a b", "no", "a b"],
        [{"total": 0.5}] * 4,
        judges={"harmlessness": [0.8, 0.5, 0.6, 0.5]},
        finished=[True, True, True, True],
        groups=GROUPS,
    )
    model = evaluate_responses(
        PROMPTS,
        ["a b c d", "a b c", "a b", "a b c d e f"],
        [{"total": 0.6}, {"total": 0.7}, {"total": 0.8}, {"total": 0.5}],
        reference_scores=[{"total": 0.5}] * 4,
        judges={"harmlessness": [0.2, 0.6, 0.4, 0.6]},
        reference_judges={"harmlessness": [0.8, 0.5, 0.6, 0.5]},
        finished=[False, True, True, True],
        groups=GROUPS,
    )
    return {"reference": reference, "a_lol": model}


def test_each_group_gets_its_means_and_their_change_from_the_reference_on_its_prompts():
    """Harmful prompts 1 and 3: reward 0.6 and 0.8 against 0.5 and 0.5, mean 0.7, change +0.2
    with differences 0.1 and 0.3 (sd 0.1414, se 0.1); harmlessness 0.3 against 0.7 (−0.4,
    differences −0.6 and −0.2, se 0.2); one answer of two cut; 4 and 2 words, mean 3."""
    model = grouped_reports()["a_lol"]

    harmful = model.by_group["harmful"]
    assert list(model.by_group) == ["harmful", "helpful"]
    assert harmful.n == 2 and harmful.reward == pytest.approx(0.7)
    assert harmful.reward_change == pytest.approx(0.2)
    assert harmful.reward_change_se == pytest.approx(0.1)
    assert harmful.judges["harmlessness"] == pytest.approx(0.3)
    assert harmful.judge_change["harmlessness"] == pytest.approx(-0.4)
    assert harmful.judge_change_se["harmlessness"] == pytest.approx(0.2)
    assert harmful.cut_off_share == 0.5 and harmful.length_words == 3.0
    helpful = model.by_group["helpful"]
    assert helpful.reward_change == pytest.approx(0.1)
    assert helpful.judge_change["harmlessness"] == pytest.approx(0.1)
    assert [e.group for e in model.examples] == GROUPS


def test_the_group_table_shows_where_a_change_comes_from():
    lines = group_table(grouped_reports()).splitlines()

    assert lines[2] == (
        "| group | prompts | model | reward | harmlessness | cut at the budget | words |"
    )
    assert lines[4] == "| harmful | 2 | π_ref (reference) | **0.500** | 0.700 | 0% | 1.0 |"
    assert (
        lines[5]
        == "| harmful | 2 | a_lol | **0.700** (+0.200 ± 0.100) | 0.300 (−0.400 ± 0.200) | 50% | 3.0 |"
    )
    assert (
        lines[7]
        == "| helpful | 2 | a_lol | **0.600** (+0.100 ± 0.100) | 0.600 (+0.100 ± 0.000) | 0% | 4.5 |"
    )


def test_without_two_groups_there_is_no_group_table():
    ungrouped = evaluate_responses(PROMPTS, RESPONSES, SCORES)
    one_group = evaluate_responses(PROMPTS, RESPONSES, SCORES, groups=["all"] * 4)

    assert ungrouped.by_group == {}
    assert group_table({"reference": ungrouped}) == ""
    assert group_table({"reference": one_group}) == ""


def test_a_written_report_reads_back_with_its_groups(tmp_path):
    model = grouped_reports()["a_lol"]
    write_report(model, tmp_path, "a_lol")

    again = read_report(tmp_path)

    assert again.by_group == model.by_group
    assert [e.group for e in again.examples] == GROUPS


def test_a_report_written_before_groups_existed_reads_back_without_them(tmp_path):
    write_report(evaluate_responses(PROMPTS, RESPONSES, SCORES), tmp_path, "old")
    summary = json.loads((tmp_path / "eval.json").read_text())
    del summary["by_group"]
    (tmp_path / "eval.json").write_text(json.dumps(summary))

    assert read_report(tmp_path).by_group == {}


def test_groups_must_match_the_prompts():
    with pytest.raises(ValueError, match="3 groups for 4 prompts"):
        evaluate_responses(PROMPTS, RESPONSES, SCORES, groups=GROUPS[:3])
