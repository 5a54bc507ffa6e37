"""The embedded demo task: its reward orders answers sensibly and its data is noisy on purpose."""

from __future__ import annotations

from collections import Counter

import pytest

from alol.demo.task import (
    BAD_KINDS,
    COMPONENTS,
    KINDS,
    REWARD_SPEC,
    TOPIC_FACTS,
    TaskConfig,
    build_task,
    classify,
    informativeness,
    politeness,
    relevance,
    reward,
    to_records,
    words,
)
from alol.rewards import load_reward, score

PROMPT = "User: Tell me about tea.\n\nAssistant:"
GOOD = "Sure. Tea is brewed from dried leaves. Also, tea tastes good hot or iced. I hope this helps, thank you for asking!"
RUDE = "Sure. Tea? What a stupid question. Go away, this is so boring."
OFF_TOPIC = "Sure. Cats are curious animals, and cats sleep for most of the day. It is a wonderful thing to learn about."
REPETITIVE = "Sure. Tea tea tea tea tea tea tea tea."
SHORT = "Sure. Tea."


@pytest.fixture(scope="module")
def task():
    return build_task(TaskConfig(seed=0))


def test_politeness_adds_a_quarter_per_kind_word_and_removes_a_half_per_rude_word():
    """Two kind words in "thank you, happy to help": 0.5 + 2·0.25 = 1.0.
    "stupid and boring, thank you": 0.5 + 0.25 − 2·0.5 = −0.25, clipped to 0.
    "a plain answer": 0.5. A repeated kind word counts once: "happy happy" → 0.75."""
    scores = politeness(
        [PROMPT] * 4,
        [
            "Thank you, happy to help.",
            "Stupid and boring, thank you.",
            "A plain answer.",
            "happy happy",
        ],
    )
    assert scores == [1.0, 0.0, 0.5, 0.75]


def test_relevance_is_the_share_of_topic_mentions_that_name_the_prompt_topic():
    """In "tea and cats and tea", 2 of 3 topic mentions are tea → 2/3; none at all → 0."""
    scores = relevance([PROMPT] * 4, ["Tea is nice.", "Tea and cats and tea.", "Cats!", "Hello."])
    assert scores == pytest.approx([1.0, 2 / 3, 0.0, 0.0])


def test_informativeness_counts_distinct_words_against_at_least_twelve():
    """For "tea tea tea tea": 1 distinct / max(4, 12) = 1/12; 14 distinct words → 14/14 = 1."""
    fourteen = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    assert informativeness([PROMPT] * 2, ["tea tea tea tea", fourteen]) == pytest.approx(
        [1 / 12, 1.0]
    )


def test_the_reward_ranks_a_good_answer_above_every_kind_of_bad_one():
    totals = reward([PROMPT] * 5, [GOOD, RUDE, OFF_TOPIC, REPETITIVE, SHORT])
    good, *bad = totals
    assert good > 0.9
    assert all(value < good - 0.25 for value in bad)
    assert all(0.0 <= value <= 1.0 for value in totals)


def test_each_bad_kind_loses_on_the_component_it_violates():
    prompts = [PROMPT] * 5
    responses = [GOOD, RUDE, OFF_TOPIC, REPETITIVE, SHORT]
    polite, relevant, informative = (c(prompts, responses) for c in COMPONENTS.values())
    assert polite[1] == 0.0 and polite[0] == 1.0
    assert relevant[2] == 0.0 and relevant[0] == 1.0
    assert informative[3] < 0.2 and informative[4] < 0.2 and informative[0] > 0.9


def test_the_reward_spec_scores_the_same_total_through_alol_rewards():
    """The pipeline scores with REWARD_SPEC: each component keeps its name, total = their mean."""
    responses = [GOOD, RUDE, SHORT]
    scored = score(load_reward(REWARD_SPEC), [PROMPT] * 3, responses, show_progress=False)
    assert set(scored[0]) == {*COMPONENTS, "total"}
    for row, total in zip(scored, reward([PROMPT] * 3, responses), strict=True):
        assert row["total"] == pytest.approx(total)


def test_classify_recognises_each_kind_of_answer():
    kinds = [classify(PROMPT, r) for r in (GOOD, RUDE, OFF_TOPIC, REPETITIVE, SHORT)]
    assert kinds == list(KINDS)


def test_no_fact_mentions_another_topic():
    """Otherwise a correct on-topic answer would count as partly off-topic."""
    for topic, facts in TOPIC_FACTS.items():
        named = {w for fact in facts for w in words(fact)} & set(TOPIC_FACTS)
        assert not named, f"{topic}: facts name {named}"


def test_prompts_never_repeat_across_splits(task):
    train, val, test = ({e.prompt for e in split} for split in (task.train, task.val, task.test))
    assert not (train & val or train & test or val & test)
    assert len(test) == len(TOPIC_FACTS)


def test_the_data_is_noisy_in_the_intended_proportions(task):
    """Noisy topics: per prompt 1 good, 3 of the topic's dominant bad kind, 1 other bad answer.
    Mild topics: 2 good, 3 distinct bad kinds. Half the topics are noisy, so
    good = (20·5·1 + 20·5·2) / 1000 = 30% of the training answers."""
    kinds = Counter(e.kind for e in task.train)
    assert len(task.train) == 40 * 5 * 5
    assert kinds["good"] == 300
    assert set(kinds) == set(KINDS)
    assert len(task.noisy_topics) == 20
    for topic, dominant in task.noisy_topics.items():
        topic_kinds = Counter(e.kind for e in task.train if e.topic == topic)
        assert topic_kinds[dominant] >= 3 * topic_kinds["good"]
        assert topic_kinds.most_common(1)[0][0] == dominant


def test_bad_answers_often_share_their_first_words_with_good_ones(task):
    """Same opener, then the topic's name: good and bad part ways only after that."""
    good_starts = {tuple(e.response.split()[:2]) for e in task.train if e.kind == "good"}
    bad = [e for e in task.train if e.kind in BAD_KINDS]
    shared = sum(tuple(e.response.split()[:2]) in good_starts for e in bad)
    assert shared / len(bad) > 0.5


def test_the_same_seed_gives_the_same_data_and_another_seed_other_data(task):
    assert build_task(TaskConfig(seed=0)) == task
    assert build_task(TaskConfig(seed=1)).train != task.train


def test_records_store_the_reward_and_name_the_kind(task):
    records = to_records(task.train[:5], "train")
    assert [r.id.rsplit("-", 1)[1] for r in records] == [e.kind for e in task.train[:5]]
    assert records[0].prompt == [{"role": "user", "content": task.train[0].prompt}]
    assert records[0].reward == pytest.approx(
        reward([task.train[0].prompt], [task.train[0].response])[0]
    )
