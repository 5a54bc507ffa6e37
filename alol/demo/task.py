"""The embedded demo task: short answers about everyday topics, learned from noisy data.

A user asks about one of 40 topics ("Tell me about tea."). The behaviour data holds several
pre-existing answers per prompt, and most of them are bad in one of four ways:

- `rude`: insults the user (often after a correct fact);
- `off_topic`: a kind, informative answer about *another* topic;
- `repetitive`: repeats one phrase over and over;
- `short`: a word or a bare fact, too little to inform.

Every answer opens with the same few words ("Sure.", "Okay.", "Right.") and most go on with
the topic's name, so good and bad answers share their first tokens and part ways later. On
half of the topics ("noisy" topics) one bad kind outnumbers the good answers three to one, so
a model trained with plain NLL learns to continue into that bad kind when it decodes greedily.
The reward tells the kinds apart, so A-LoL's advantage keeps the good answers.

The reward has three components, each in [0, 1], combined as a weighted mean (`REWARD_SPEC`):

- `politeness`: a word lexicon, 0.5 + 0.25 per distinct kind word − 0.5 per distinct rude word;
- `relevance`: the share of topic mentions that name the prompt's topic;
- `informativeness`: distinct words / max(words, 12), low for repetition and for short answers.

Everything here is pure Python and deterministic from a seed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from alol.data.records import RewardRecord

# Each topic with two facts, written to follow the topic's name ("Tea is brewed ...").
# No fact names another topic, so `relevance` can tell on-topic from off-topic answers.
TOPIC_FACTS: dict[str, tuple[str, str]] = {
    "tea": ("is brewed from dried leaves", "tastes good hot or iced"),
    "coffee": ("comes from roasted beans", "keeps many people awake"),
    "bread": ("is baked from flour and water", "rises because of yeast"),
    "rain": ("falls from grey skies", "helps crops grow"),
    "music": ("is made of rhythm and melody", "can lift a sad mood"),
    "books": ("hold stories and ideas", "let readers travel in their minds"),
    "cats": ("are curious animals", "sleep for most of the day"),
    "dogs": ("are loyal companions", "love long walks outside"),
    "trees": ("make oxygen from sunlight", "give shade in summer"),
    "boats": ("float on lakes and seas", "carry people and goods"),
    "bicycles": ("have two wheels and pedals", "are a cheap way to travel"),
    "chess": ("is a board game of strategy", "has been played for centuries"),
    "oceans": ("cover most of the planet", "are home to whales and fish"),
    "mountains": ("rise high above the land", "often have icy peaks"),
    "volcanoes": ("spit out hot lava", "can build new islands"),
    "bees": ("make honey from nectar", "help flowers spread pollen"),
    "gardens": ("are full of plants and flowers", "need water and care"),
    "stars": ("are huge balls of burning gas", "shine at night far away"),
    "comets": ("have long glowing tails", "travel around the sun"),
    "rivers": ("flow down to the sea", "carve valleys over time"),
    "snow": ("is made of frozen water", "covers the ground in winter"),
    "cheese": ("is made from milk", "comes in many flavours"),
    "apples": ("grow in orchards", "can be red, green or yellow"),
    "pizza": ("is a flat dough with toppings", "was first made in Italy"),
    "trains": ("run on long steel rails", "carry many passengers at once"),
    "rockets": ("burn fuel to fly into space", "launched the first satellites"),
    "painting": ("uses colours on a canvas", "lets artists show feelings"),
    "dancing": ("moves the body to a beat", "is fun at parties"),
    "soccer": ("is played with a round ball", "is loved around the world"),
    "swimming": ("is good exercise for the whole body", "keeps people cool in summer"),
    "owls": ("hunt at night", "can turn their heads very far"),
    "penguins": ("live in cold southern places", "swim fast but cannot fly"),
    "deserts": ("get very little water", "can be hot by day and cold at night"),
    "clouds": ("are made of tiny water drops", "drift across the sky"),
    "robots": ("follow programs written by people", "help build cars in factories"),
    "maps": ("show where places are", "help travellers find their way"),
    "candles": ("give a warm soft light", "are made of wax"),
    "kites": ("fly high on windy days", "need a long string"),
    "puzzles": ("have many small pieces", "train patience and focus"),
    "butterflies": ("start life as caterpillars", "have bright patterned wings"),
}
TOPICS = tuple(TOPIC_FACTS)

PROMPT_TEMPLATES = (
    "Tell me about {topic}.",
    "What do you think of {topic}?",
    "Can you describe {topic}?",
    "I want to learn about {topic}.",
    "Say something about {topic}.",
    "What is interesting about {topic}?",
    "Please explain {topic} to me.",
    "Do you know anything about {topic}?",
)

OPENERS = ("Sure.", "Okay.", "Right.")

# Response templates per kind. {Topic}/{topic}: the prompt's topic; {f1}, {f2}: its facts;
# {Other}/{other}, {o1}, {o2}: another topic and its facts.
RESPONSE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "good": (
        "{opener} {Topic} {f1}. Also, {topic} {f2}. I hope this helps, thank you for asking!",
        "{opener} {Topic} {f1}, and {topic} {f2}. It is a wonderful thing to learn about.",
        "{opener} Many people enjoy {topic}. {Topic} {f1}, and {topic} {f2}. Happy to help!",
    ),
    "rude": (
        "{opener} {Topic} {f1}, but who cares? That is a dumb question, so stop asking me.",
        "{opener} {Topic}? What a stupid question. Go away, this is so boring.",
        "{opener} Ugh, {topic} again? I hate talking about {topic}, it is pointless.",
    ),
    "off_topic": (
        "{opener} {Other} {o1}. Also, {other} {o2}. I hope this helps, thank you for asking!",
        "{opener} {Other} {o1}, and {other} {o2}. It is a wonderful thing to learn about.",
    ),
    "repetitive": (
        "{opener} {Topic} {f1}, {f1}, {f1}, {f1}.",
        "{opener} {Topic} {topic} {topic} {topic} {topic} {topic} {topic} {topic}.",
    ),
    "short": (
        "{opener} {Topic}.",
        "{opener} {Topic} {f1}.",
        "{opener} I do not know.",
    ),
}
KINDS = tuple(RESPONSE_TEMPLATES)
BAD_KINDS = tuple(kind for kind in KINDS if kind != "good")

# --- reward -------------------------------------------------------------------------------

KIND_WORDS = frozenset(
    [
        "happy",
        "glad",
        "hope",
        "thank",
        "thanks",
        "please",
        "enjoy",
        "wonderful",
        "lovely",
        "delightful",
        "kind",
        "pleasure",
        "welcome",
        "fascinating",
        "beautiful",
    ]
)
RUDE_WORDS = frozenset(
    [
        "stupid",
        "dumb",
        "boring",
        "hate",
        "ugh",
        "pointless",
        "idiot",
        "annoying",
        "awful",
        "useless",
        "shut",
        "whatever",
        "cares",
        "silly",
        "terrible",
    ]
)
INFORMATIVE_WORDS = 12
"""An answer needs this many distinct words to be fully informative."""

_WORD = re.compile(r"[a-z']+")


def words(text: str) -> list[str]:
    """Lower-cased words; punctuation and digits are dropped."""
    return _WORD.findall(text.lower())


def politeness(prompts: list[str], responses: list[str]) -> list[float]:
    """0.5 + 0.25 per distinct kind word − 0.5 per distinct rude word, clipped to [0, 1]."""
    scores = []
    for response in responses:
        vocabulary = set(words(response))
        raw = 0.5 + 0.25 * len(vocabulary & KIND_WORDS) - 0.5 * len(vocabulary & RUDE_WORDS)
        scores.append(min(1.0, max(0.0, raw)))
    return scores


def prompt_topic(prompt: str) -> str | None:
    """The last known topic the prompt names (the question, after any earlier turns)."""
    named = [word for word in words(prompt) if word in TOPIC_FACTS]
    return named[-1] if named else None


def relevance(prompts: list[str], responses: list[str]) -> list[float]:
    """Mentions of the prompt's topic / mentions of any topic; 0 when no topic is mentioned."""
    scores = []
    for prompt, response in zip(prompts, responses, strict=True):
        topic = prompt_topic(prompt)
        mentions = [word for word in words(response) if word in TOPIC_FACTS]
        on_topic = sum(word == topic for word in mentions)
        scores.append(on_topic / len(mentions) if mentions else 0.0)
    return scores


def informativeness(prompts: list[str], responses: list[str]) -> list[float]:
    """Distinct words / max(words, INFORMATIVE_WORDS): repetition and brevity both score low."""
    scores = []
    for response in responses:
        tokens = words(response)
        scores.append(len(set(tokens)) / max(len(tokens), INFORMATIVE_WORDS))
    return scores


COMPONENTS: dict[str, Callable[[list[str], list[str]], list[float]]] = {
    "politeness": politeness,
    "relevance": relevance,
    "informativeness": informativeness,
}

REWARD_SPEC = {
    "type": "sum",
    "name": "demo",
    "components": [
        {"spec": f"alol.demo.task:{name}", "weight": 1 / len(COMPONENTS)} for name in COMPONENTS
    ],
}
"""The demo's reward as an alol reward spec: the mean of the three components, in [0, 1]."""


def reward(prompts: list[str], responses: list[str]) -> list[float]:
    """The total reward (the mean of the components), for code that wants one number."""
    columns = [component(prompts, responses) for component in COMPONENTS.values()]
    return [sum(values) / len(values) for values in zip(*columns, strict=True)]


def good_answer(prompts: list[str], responses: list[str]) -> list[float]:
    """1 for an answer the task counts as good (polite, on topic, informative and not
    repetitive: `classify`), else 0. The demo's judge: the reward averages its components, so
    a polite answer about another topic can score as well as a good one; this cannot be
    pleased that way."""
    return [
        float(classify(prompt, response) == "good")
        for prompt, response in zip(prompts, responses, strict=True)
    ]


JUDGE_SPEC = "alol.demo.task:good_answer"
"""The demo's judge as an alol reward spec: used only to evaluate."""


# --- data ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoExample:
    """One (prompt, response) of the behaviour data, with the kind of answer it is."""

    prompt: str
    topic: str
    response: str
    kind: str


@dataclass
class TaskConfig:
    """Sizes and noise of the generated data."""

    seed: int = 0
    responses_per_prompt: int = 5
    """Answers per training prompt."""
    train_templates: int = 5
    """Prompt templates per topic used for training; the rest are split into val and test."""
    val_templates: int = 2
    """Prompt templates per topic whose prompts fit V (the last remaining one is the test)."""
    noisy_fraction: float = 0.5
    """Share of topics where one bad kind outnumbers the good answers."""
    topics: tuple[str, ...] = field(default=TOPICS)


@dataclass
class DemoTask:
    """The generated splits; prompts never repeat across splits."""

    train: list[DemoExample]
    val: list[DemoExample]
    test: list[DemoExample]
    noisy_topics: dict[str, str]
    """Noisy topic → the bad kind that dominates its answers."""


def build_task(config: TaskConfig | None = None) -> DemoTask:
    """Generate the train/val/test data, the same for the same config."""
    config = config or TaskConfig()
    if config.train_templates + config.val_templates >= len(PROMPT_TEMPLATES):
        raise ValueError(
            f"train_templates + val_templates must leave at least one of the "
            f"{len(PROMPT_TEMPLATES)} prompt templates for testing"
        )
    rng = random.Random(config.seed)
    topics = list(config.topics)
    noisy = rng.sample(topics, round(config.noisy_fraction * len(topics)))
    noisy_topics = {topic: rng.choice(BAD_KINDS) for topic in sorted(noisy)}
    task = DemoTask(train=[], val=[], test=[], noisy_topics=noisy_topics)
    for topic in topics:
        templates = rng.sample(PROMPT_TEMPLATES, len(PROMPT_TEMPLATES))
        splits = (
            (task.train, templates[: config.train_templates]),
            (task.val, templates[config.train_templates : -1]),
            (task.test, templates[-1:]),
        )
        for examples, chosen in splits:
            for template in chosen:
                prompt = template.format(topic=topic)
                for kind in _kinds_for_prompt(rng, config, noisy_topics.get(topic)):
                    response = _response(rng, kind, topic, topics)
                    examples.append(DemoExample(prompt, topic, response, kind))
    return task


def _kinds_for_prompt(rng: random.Random, config: TaskConfig, dominant: str | None) -> list[str]:
    """A noisy topic: 1 good, 3 of its dominant bad kind, the rest other bad kinds.

    A mild topic: 2 good and distinct bad kinds, so good is the most common kind.
    """
    n = config.responses_per_prompt
    if dominant is not None:
        kinds = ["good", dominant, dominant, dominant]
        others = [kind for kind in BAD_KINDS if kind != dominant]
    else:
        kinds = ["good", "good"]
        others = list(BAD_KINDS)
    kinds += rng.sample(others * n, max(0, n - len(kinds)))
    rng.shuffle(kinds)
    return kinds[:n]


def _response(rng: random.Random, kind: str, topic: str, topics: list[str]) -> str:
    other = rng.choice([t for t in topics if t != topic])
    f1, f2 = TOPIC_FACTS[topic]
    o1, o2 = TOPIC_FACTS[other]
    return rng.choice(RESPONSE_TEMPLATES[kind]).format(
        opener=rng.choice(OPENERS),
        Topic=topic.capitalize(),
        topic=topic,
        f1=f1,
        f2=f2,
        Other=other.capitalize(),
        other=other,
        o1=o1,
        o2=o2,
    )


def as_messages(prompt: str) -> list[dict[str, str]]:
    """A prompt as a one-turn conversation, rendered by the tokenizer's chat template."""
    return [{"role": "user", "content": prompt}]


def to_records(examples: list[DemoExample], split: str) -> list[RewardRecord]:
    """Reward records with the demo reward stored (DPO builds its pairs from it).

    The id names the kind of answer, so reports can count kinds.
    """
    totals = reward([e.prompt for e in examples], [e.response for e in examples])
    return [
        RewardRecord(as_messages(e.prompt), e.response, total, id=f"{split}-{i}-{e.kind}")
        for i, (e, total) in enumerate(zip(examples, totals, strict=True))
    ]


def classify(prompt: str, response: str) -> str:
    """Which kind of answer a (decoded) response is, judged like the reward judges it."""
    tokens = words(response)
    if politeness([prompt], [response])[0] < 0.5:
        return "rude"
    if relevance([prompt], [response])[0] < 1.0:
        return "off_topic"
    if not tokens or len(set(tokens)) / len(tokens) < 0.6:
        return "repetitive"
    if len(tokens) < INFORMATIVE_WORDS:
        return "short"
    return "good"
