"""A local Hugging Face sequence classifier as a reward (the A-LoL paper's HH reward model)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from alol.errors import AlolError
from alol.reports.metrics import HeldOutAgreement, agreement_of


class ClassifierReward:
    """A local Hugging Face sequence classifier: score = activation(logits)[label].

    The defaults give the A-LoL paper's HH reward: sigmoid of a reward model's last logit.

    path: a directory holding the model and its tokenizer (never fetched from a hub).
    label: the logit to read, as an index or a name from the config's label2id; default the last.
    activation: "sigmoid" of that logit, "softmax" over all logits, or "none" (the raw logit).
    batch_size: records per forward pass.
    max_length: tokens per input; longer inputs lose tokens from the left (the prompt's start).
    inputs: what the classifier reads: "pair" (prompt and response as a text pair), "concat"
        (prompt + response as one text), "response" (the response alone), "prompt" (the
        prompt alone: a classifier of what was asked, e.g. a gate), or "auto": "pair"
        when the tokenizer has a separator token (encoders trained on text pairs), else "concat".
    activation, max_length and inputs left unset take the values a model fitted by
    `alol reward-model` was trained with (its SETTINGS_FILE), else sigmoid, 512 and auto.
    name: the component's name; default the directory's name.
    device: default "cuda" when available, else "cpu".
    dtype: the weights' dtype, e.g. "bfloat16"; "auto" keeps the checkpoint's.
    """

    ACTIVATIONS = ("sigmoid", "softmax", "none")
    INPUTS = ("auto", "pair", "concat", "response", "prompt")

    def __init__(
        self,
        path: str | Path,
        label: int | str | None = None,
        activation: str | None = None,
        batch_size: int = 16,
        max_length: int | None = None,
        inputs: str | None = None,
        name: str | None = None,
        device: str | None = None,
        dtype: str = "auto",
    ):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"classifier reward: {path} is not a model directory (no config.json); give the "
                "directory that save_pretrained wrote"
            )
        trained = trained_settings(path)
        activation = activation or trained.get("activation", "sigmoid")
        max_length = max_length or trained.get("max_length", 512)
        inputs = inputs or trained.get("inputs", "auto")
        _check_choice("activation", activation, self.ACTIVATIONS)
        _check_choice("inputs", inputs, self.INPUTS)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = "left"
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=dtype, local_files_only=True
        )
        self.model.to(self.device).eval()
        _ensure_padding(self.tokenizer, self.model.config, path)
        self.label = _label_index(self.model.config, label, path)
        if activation == "softmax" and self.model.config.num_labels == 1:
            raise ValueError(
                f"classifier reward {path}: softmax over its single logit is always 1; "
                "use activation 'sigmoid' or 'none'"
            )
        self.activation = activation
        self.batch_size = batch_size
        self.max_length = max_length
        self.inputs = resolve_inputs(self.tokenizer, inputs)
        self.name = name or path.name
        self.components = (self.name,)
        self.weights = {self.name: 1.0}

    def __call__(self, prompts: list[str], responses: list[str]) -> list[dict[str, float]]:
        """Each distinct input is scored once: a classifier of the prompt alone (a gate) sees
        each prompt once however many answers it has, one of the response alone each answer
        once however many prompts it is given to (the audit's constant answers)."""
        inputs = [self._read(p, r) for p, r in zip(prompts, responses, strict=True)]
        distinct = list(dict.fromkeys(inputs))
        scored = dict(zip(distinct, self._score(distinct), strict=True))
        return [{self.name: scored[read]} for read in inputs]

    def _read(self, prompt: str, response: str) -> tuple[str, str]:
        """The part of a record the classifier reads (the other part left empty)."""
        return (
            "" if self.inputs == "response" else prompt,
            "" if self.inputs == "prompt" else response,
        )

    @torch.inference_mode()
    def _score(self, inputs: list[tuple[str, str]]) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(inputs), self.batch_size):
            prompts, responses = zip(*inputs[start : start + self.batch_size], strict=True)
            encoded = self._encode(list(prompts), list(responses)).to(self.device)
            logits = self.model(**encoded).logits.float()
            scores.extend(self._activate(logits).tolist())
        return scores

    def _encode(self, prompts: list[str], responses: list[str]):
        return encode_for_classifier(
            self.tokenizer, prompts, responses, self.inputs, self.max_length
        )

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        if self.activation == "softmax":
            return logits.softmax(-1)[:, self.label]
        chosen = logits[:, self.label]
        return chosen.sigmoid() if self.activation == "sigmoid" else chosen


SETTINGS_FILE = "alol_reward_model.json"
"""Written by `alol reward-model` beside the model: how it reads its inputs and what its
output means, so the classifier reward scores new text exactly as the model was trained."""


def trained_settings(path: Path) -> dict:
    """The SETTINGS_FILE of a model `alol reward-model` fitted; {} for any other classifier."""
    settings = path / SETTINGS_FILE
    return json.loads(settings.read_text(encoding="utf-8")) if settings.is_file() else {}


def fitted_agreement(path: Path) -> HeldOutAgreement | None:
    """A model's held-out agreement, when `alol reward-model` fitted it: kept in its
    SETTINGS_FILE, or, for a model fitted before it was kept there, in the stage's metrics.json
    beside the model's folder. None for any other classifier."""
    settings = trained_settings(path)
    if not settings:
        return None
    if "heldout" in settings:
        heldout = settings["heldout"]
        try:
            return HeldOutAgreement(float(heldout["accuracy"]), int(heldout["pairs"]))
        except (KeyError, TypeError, ValueError) as error:
            raise AlolError(
                f"{path / SETTINGS_FILE}: 'heldout' should be {{accuracy, pairs}}, not "
                f"{heldout!r} ({error!r}); fit the model again with `alol reward-model`"
            ) from error
    metrics = path.parent / "metrics.json"
    return (
        agreement_of(json.loads(metrics.read_text(encoding="utf-8"))) if metrics.is_file() else None
    )


def resolve_inputs(tokenizer, inputs: str) -> str:
    """'auto': a text pair for encoders trained on pairs (a separator token), else one text."""
    if inputs != "auto":
        return inputs
    return "pair" if tokenizer.sep_token is not None else "concat"


def encode_for_classifier(
    tokenizer, prompts: list[str], responses: list[str], inputs: str, max_length: int
):
    """The classifier's inputs for (prompt, response) records: a text pair, the joined text,
    the response or the prompt alone, cut from the left (the prompt's start goes first) to
    `max_length`."""
    if inputs == "pair":
        texts = (prompts, responses)
    elif inputs == "concat":
        texts = ([p + r for p, r in zip(prompts, responses, strict=True)],)
    elif inputs == "prompt":
        texts = (prompts,)
    else:
        texts = (responses,)
    tokenizer.truncation_side = "left"
    return tokenizer(
        *texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )


def _check_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"classifier reward: {option} must be one of {choices}, got {value!r}")


def _ensure_padding(tokenizer, config, path: Path) -> None:
    """Batches need a pad token, and last-token classifiers (GPT-2, Llama) need its id in the config."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                f"classifier reward {path}: the tokenizer has neither a pad nor an EOS token; "
                "add a pad token (tokenizer.add_special_tokens) and set config.pad_token_id"
            )
        tokenizer.pad_token = tokenizer.eos_token
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id


def _label_index(config, label: int | str | None, path: Path) -> int:
    num_labels = config.num_labels
    if label is None:
        return num_labels - 1
    if isinstance(label, str):
        # id2label is the reliable map: configs may carry label2id as None or out of date
        indices = {name: int(index) for index, name in (config.id2label or {}).items()}
        if label not in indices:
            raise ValueError(
                f"classifier reward {path}: no label {label!r}; its labels are {list(indices)}"
            )
        return indices[label]
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < num_labels:
        raise ValueError(
            f"classifier reward {path}: label must be a name or an index in [0, {num_labels}), got {label!r}"
        )
    return label
