"""Rewards: turn a reward *spec* into a callable that scores (prompt, response) pairs.

A spec is one of:
- `"package.module:function"` or `"path/to/file.py:function"`: a Python function taking
  `(prompts, responses)` and returning, per record, a float or a dict of named components;
  `{"type": "callable", "path": ..., "name": ..., "kwargs": {...}}` passes extra keyword
  arguments to it;
- a built-in scorer's name (`alol.scorers.SCORERS`), or `{"type": NAME, "name": ..., **options}`;
- `{"type": "classifier", "path": DIR, ...}`: a local Hugging Face sequence classifier
  (see `ClassifierReward`);
- `{"type": "sum", "components": [{"spec": ..., "weight": w, "name": n}, ...]}`, or a plain
  list of specs (weights 1): a weighted sum whose components stay visible.

Every reward returns one dict of components per record. `score` runs it batch by batch,
adds the weighted `"total"`, and turns any failure into a `RewardError` that names the
batch, the record and the component.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import math
import numbers
import os
import sys
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from alol import __version__
from alol.errors import AlolError
from alol.scorers import SCORERS

RewardSpec = str | dict | list

# Files up to this size are fingerprinted by content; bigger ones (weights) by size and mtime.
CONTENT_HASH_LIMIT = 16 * 2**20


class RewardError(AlolError):
    """A reward failed while scoring; the message names the reward, the batch or record, and the component."""


class Reward(Protocol):
    """Scores a batch: one dict of named, finite components per (prompt, response) record.

    alol's own rewards also carry `name` (used in messages) and `weights` (component → its
    weight in `"total"`); `score` treats a reward without `weights` as weighting all by 1.
    """

    components: tuple[str, ...]

    def __call__(self, prompts: list[str], responses: list[str]) -> list[dict[str, float]]: ...


# --- rewards ----------------------------------------------------------------------------------


class CallableReward:
    """A Python function as a reward.

    A function returning floats has one component, the reward's name; a function returning
    dicts has one component per key, known from its first call on (`components` raises before).
    """

    def __init__(
        self,
        function: Callable[[list[str], list[str]], Any],
        name: str,
        components: tuple[str, ...] | None = None,
    ):
        self.function = function
        self.name = name
        self._components = components

    @property
    def components(self) -> tuple[str, ...]:
        if self._components is None:
            raise RewardError(
                f"the components of reward {self.name!r} are known only after its first call "
                "(its function may return dicts); score some records first"
            )
        return self._components

    @property
    def weights(self) -> dict[str, float]:
        return dict.fromkeys(self.components, 1.0)

    def __call__(self, prompts: list[str], responses: list[str]) -> list[dict[str, Any]]:
        outputs = self.function(prompts, responses)
        if hasattr(outputs, "tolist"):  # a numpy array or a tensor
            outputs = outputs.tolist()
        if not isinstance(outputs, list | tuple):
            raise RewardError(
                f"reward {self.name!r} returned a {type(outputs).__name__}; it must return a list "
                "with one float (or one dict of components) per record"
            )
        records = [dict(out) if isinstance(out, Mapping) else {self.name: out} for out in outputs]
        if self._components is None and records:
            self._components = tuple(records[0])
        return records


class ClassifierReward:
    """A local Hugging Face sequence classifier: score = activation(logits)[label].

    The defaults give the A-LoL paper's HH reward: sigmoid of a reward model's last logit.

    path: a directory holding the model and its tokenizer (never fetched from a hub).
    label: the logit to read, as an index or a name from the config's label2id; default the last.
    activation: "sigmoid" of that logit, "softmax" over all logits, or "none" (the raw logit).
    batch_size: records per forward pass.
    max_length: tokens per input; longer inputs lose tokens from the left (the prompt's start).
    inputs: what the classifier reads: "pair" (prompt and response as a text pair), "concat"
        (prompt + response as one text), "response" (the response alone), or "auto": "pair"
        when the tokenizer has a separator token (encoders trained on text pairs), else "concat".
    name: the component's name; default the directory's name.
    device: default "cuda" when available, else "cpu".
    dtype: the weights' dtype, e.g. "bfloat16"; "auto" keeps the checkpoint's.
    """

    ACTIVATIONS = ("sigmoid", "softmax", "none")
    INPUTS = ("auto", "pair", "concat", "response")

    def __init__(
        self,
        path: str | Path,
        label: int | str | None = None,
        activation: str = "sigmoid",
        batch_size: int = 16,
        max_length: int = 512,
        inputs: str = "auto",
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
        if inputs == "auto":
            inputs = "pair" if self.tokenizer.sep_token is not None else "concat"
        self.inputs = inputs
        self.name = name or path.name
        self.components = (self.name,)
        self.weights = {self.name: 1.0}

    @torch.inference_mode()
    def __call__(self, prompts: list[str], responses: list[str]) -> list[dict[str, float]]:
        scores: list[float] = []
        for start in range(0, len(responses), self.batch_size):
            stop = start + self.batch_size
            encoded = self._encode(prompts[start:stop], responses[start:stop]).to(self.device)
            logits = self.model(**encoded).logits.float()
            scores.extend(self._activate(logits).tolist())
        return [{self.name: value} for value in scores]

    def _encode(self, prompts: list[str], responses: list[str]):
        if self.inputs == "pair":
            texts = (prompts, responses)
        elif self.inputs == "concat":
            texts = ([p + r for p, r in zip(prompts, responses, strict=True)],)
        else:
            texts = (responses,)
        return self.tokenizer(
            *texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        if self.activation == "softmax":
            return logits.softmax(-1)[:, self.label]
        chosen = logits[:, self.label]
        return chosen.sigmoid() if self.activation == "sigmoid" else chosen


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


class WeightedSum:
    """A weighted sum of rewards whose components stay visible.

    Each term contributes its components under their own names; a name that two terms share
    is prefixed by its term's name ("term/component"), except a term's own name, which stays.
    """

    def __init__(self, terms: list[tuple[Any, float]], name: str = "sum"):
        if not terms:
            raise ValueError("a sum reward needs at least one component")
        duplicates = _duplicates(reward.name for reward, _ in terms)
        if duplicates:
            raise ValueError(
                f"sum reward {name!r}: more than one component is named {duplicates}; give each "
                "a distinct 'name'"
            )
        self.terms = terms
        self.name = name

    @property
    def components(self) -> tuple[str, ...]:
        return tuple(new for renames in self._renames() for new in renames.values())

    @property
    def weights(self) -> dict[str, float]:
        weights = {}
        for (reward, weight), renames in zip(self.terms, self._renames(), strict=True):
            inner = _weights_of(reward)
            for old, new in renames.items():
                weights[new] = weight * inner.get(old, 1.0)
        return weights

    def _renames(self) -> list[dict[str, str]]:
        """Per term, its component name → the sum's component name."""
        shared = Counter(c for reward, _ in self.terms for c in reward.components)
        renames = [_term_renames(reward, shared) for reward, _ in self.terms]
        duplicates = _duplicates(new for r in renames for new in r.values())
        if duplicates:
            raise RewardError(
                f"sum reward {self.name!r}: components {duplicates} still clash after prefixing "
                "with their terms' names; rename the terms or the dict keys"
            )
        return renames

    def __call__(self, prompts: list[str], responses: list[str]) -> list[dict[str, Any]]:
        outputs = [self._call_term(reward, prompts, responses) for reward, _ in self.terms]
        records: list[dict[str, Any]] = [{} for _ in prompts]
        for renames, term_outputs in zip(self._renames(), outputs, strict=True):
            for record, output in zip(records, term_outputs, strict=True):
                record.update((renames.get(key, key), value) for key, value in output.items())
        return records

    def _call_term(self, reward, prompts: list[str], responses: list[str]) -> list[Mapping]:
        try:
            outputs = reward(prompts, responses)
        except Exception as error:
            raise RewardError(
                f"component {reward.name!r} raised {type(error).__name__}: {error}"
            ) from error
        _check_count(outputs, len(prompts), f"component {reward.name!r}")
        for output in outputs:
            if not isinstance(output, Mapping):
                raise RewardError(
                    f"component {reward.name!r} gave a {type(output).__name__}; expected a dict per record"
                )
        return outputs


def _term_renames(reward, shared: Counter) -> dict[str, str]:
    """A term keeps its own name and every unshared key; a shared key gets the term's name as prefix."""
    keeps_all = reward.components == (reward.name,)
    return {
        c: c if keeps_all or shared[c] == 1 else f"{reward.name}/{c}" for c in reward.components
    }


def _duplicates(names) -> list[str]:
    return sorted(name for name, count in Counter(names).items() if count > 1)


def _weights_of(reward) -> dict[str, float]:
    return getattr(reward, "weights", {})


# --- specs --------------------------------------------------------------------------------------


def load_reward(spec: RewardSpec) -> CallableReward | ClassifierReward | WeightedSum:
    """Build the reward a spec describes (see the module docstring for the forms)."""
    return _build(_normalize(spec))


def _normalize(spec: RewardSpec) -> dict[str, Any]:
    """Every spec form as a dict with a "type"; a sum's terms become {"spec": ..., "weight": ...}."""
    if isinstance(spec, str):
        if spec in SCORERS:
            return {"type": spec}
        if ":" in spec:
            return {"type": "callable", "path": spec}
        raise ValueError(
            f"unknown reward {spec!r}: give a built-in scorer ({', '.join(SCORERS)}), "
            "'package.module:function' or 'path/to/file.py:function'"
        )
    if isinstance(spec, list | tuple):
        return {"type": "sum", "components": [_normalize_term(term) for term in spec]}
    if isinstance(spec, Mapping):
        if "type" not in spec:
            raise ValueError(
                f"reward spec {dict(spec)!r} has no 'type'; use 'callable', 'classifier', 'sum' "
                f"or a built-in scorer ({', '.join(SCORERS)})"
            )
        normalized = dict(spec)
        if normalized["type"] == "sum":
            terms = normalized.get("components")
            if not isinstance(terms, list | tuple) or not terms:
                raise ValueError("a sum reward needs 'components': a non-empty list of specs")
            normalized["components"] = [_normalize_term(term) for term in terms]
        return normalized
    raise ValueError(
        f"a reward spec is a string, a dict or a list, got a {type(spec).__name__}: {spec!r}"
    )


def _normalize_term(term: RewardSpec) -> dict[str, Any]:
    if not (isinstance(term, Mapping) and ("spec" in term or "weight" in term)):
        return {"spec": _normalize(term), "weight": 1.0}
    if "spec" not in term:
        raise ValueError(
            f"sum component {dict(term)!r} has a 'weight' but no 'spec'; write it as "
            "{'spec': ..., 'weight': w, 'name': n}"
        )
    unknown = sorted(set(term) - {"spec", "weight", "name"})
    if unknown:
        raise ValueError(
            f"a sum component has unknown keys {unknown}; use 'spec', 'weight', 'name'"
        )
    spec = _normalize(term["spec"])
    if term.get("name") is not None:
        spec["name"] = term["name"]
    weight = term.get("weight", 1.0)
    if (
        isinstance(weight, bool)
        or not isinstance(weight, numbers.Real)
        or not math.isfinite(weight)
    ):
        raise ValueError(f"the weight of a sum component must be a finite number, got {weight!r}")
    return {"spec": spec, "weight": float(weight)}


def _build(spec: dict[str, Any]) -> CallableReward | ClassifierReward | WeightedSum:
    options = dict(spec)
    kind = options.pop("type")
    if kind in SCORERS:
        name = options.pop("name", None) or kind
        scorer = _construct(SCORERS[kind], options, f"the {kind!r} scorer")
        return CallableReward(scorer, name, components=(name,))
    builders = {"callable": _callable_reward, "classifier": ClassifierReward, "sum": _sum_reward}
    if kind not in builders:
        raise ValueError(
            f"unknown reward type {kind!r}; use 'callable', 'classifier', 'sum' or a built-in "
            f"scorer ({', '.join(SCORERS)})"
        )
    return _construct(builders[kind], options, f"a {kind!r} reward")


def _construct(factory: Callable, options: dict[str, Any], what: str):
    """Call `factory(**options)`, first naming any option it does not take or needs and lacks."""
    parameters = inspect.signature(factory).parameters
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        raise ValueError(f"{what} has no option {unknown}; its options are {list(parameters)}")
    missing = [
        name
        for name, parameter in parameters.items()
        if parameter.default is inspect.Parameter.empty and name not in options
    ]
    if missing:
        raise ValueError(f"{what} needs the option {missing}")
    return factory(**options)


def _callable_reward(
    path: str, name: str | None = None, kwargs: dict[str, Any] | None = None
) -> CallableReward:
    function = load_callable(path)
    default_name = getattr(function, "__name__", "reward")
    if kwargs:
        function = partial(function, **kwargs)
    return CallableReward(function, name or default_name)


def _sum_reward(components: list[dict[str, Any]], name: str = "sum") -> WeightedSum:
    return WeightedSum([(_build(term["spec"]), term["weight"]) for term in components], name)


def load_callable(reference: str) -> Callable:
    """Import the function that `package.module:function` or `path/to/file.py:function` names."""
    target, _, attribute = reference.rpartition(":")
    if not target or not attribute:
        raise ValueError(
            f"reward {reference!r} must look like 'package.module:function' or 'path/to/file.py:function'"
        )
    module = _load_file(Path(target)) if _is_file_target(target) else _import(target, reference)
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ValueError(f"reward {reference!r}: {target} has no function named {attribute!r}")
    return function


def _is_file_target(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def _import(module: str, reference: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        raise ValueError(
            f"reward {reference!r}: cannot import module {module!r} ({error}); install it or add "
            "its directory to PYTHONPATH, or name a file as 'path/to/file.py:function'"
        ) from error


def _load_file(path: Path):
    """Import a .py file as a module of its own (registered so pickling and dataclasses work)."""
    resolved = path.expanduser().resolve()
    if not resolved.is_file():
        raise FileNotFoundError(
            f"reward file {path} not found (a relative path is resolved from the current "
            f"directory, {Path.cwd()})"
        )
    module_name = f"_alol_reward_{hashlib.sha256(str(resolved).encode()).hexdigest()[:12]}"
    module_spec = importlib.util.spec_from_file_location(module_name, resolved)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


# --- fingerprints -------------------------------------------------------------------------------


def spec_fingerprint(spec: RewardSpec) -> str:
    """A sha256 of what the reward computes, so caches can key on it.

    It covers the normalised spec plus: the source file of each callable (a file or a module's
    file; not what that file imports), each classifier's files (by content up to 16 MiB, by
    name, size and mtime above, so copying the weights changes it), the version of alol and of
    each built-in scorer's package, and the content of any option value that names a file.
    """
    view = _fingerprint_view(_normalize(spec))
    return hashlib.sha256(json.dumps(view, sort_keys=True, default=str).encode()).hexdigest()


def _fingerprint_view(spec: dict[str, Any]) -> dict[str, Any]:
    view = {key: _with_file_digests(value) for key, value in spec.items() if key != "components"}
    kind = spec["type"]
    if kind == "sum":
        view["components"] = [
            {"spec": _fingerprint_view(term["spec"]), "weight": term["weight"]}
            for term in spec["components"]
        ]
    elif kind == "callable":
        view["source_sha256"] = _source_digest(spec["path"])
    elif kind == "classifier":
        view["model_files"] = _directory_digest(Path(spec["path"]))
    elif kind in SCORERS:
        view["alol_version"] = __version__
        view["requires"] = _package_version(SCORERS[kind].requires)
    return view


def _with_file_digests(value: Any) -> Any:
    """An option (or a kwargs entry) that names a file stands for the file's content too."""
    if isinstance(value, Mapping):
        return {key: _with_file_digests(item) for key, item in value.items()}
    if isinstance(value, str | Path) and os.path.isfile(value):
        return {"path": str(value), "sha256": _file_digest(Path(value))}
    return value


def _source_digest(reference: str) -> str | None:
    target = reference.rpartition(":")[0]
    if _is_file_target(target):
        path = Path(target).expanduser()
    else:
        try:
            module_spec = importlib.util.find_spec(target)
        except (ImportError, ValueError):
            return None
        if module_spec is None or module_spec.origin is None:
            return None
        path = Path(module_spec.origin)
    return _file_digest(path) if path.is_file() else None


def _directory_digest(directory: Path) -> list[list]:
    if not directory.is_dir():
        raise FileNotFoundError(f"classifier reward: model directory {directory} not found")
    entries = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        stat = path.stat()
        fingerprint = _file_digest(path) if stat.st_size <= CONTENT_HASH_LIMIT else stat.st_mtime_ns
        entries.append([path.relative_to(directory).as_posix(), stat.st_size, fingerprint])
    return entries


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _package_version(package: str | None) -> str | None:
    if package is None:
        return None
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


# --- scoring ----------------------------------------------------------------------------------


def score(
    reward: Reward,
    prompts: list[str],
    responses: list[str],
    batch_size: int = 32,
    show_progress: bool = True,
    timeout: float | None = None,
    record_numbers: Sequence[int] | None = None,
) -> list[dict[str, float]]:
    """Score every record; each result holds every component plus "total", their weighted sum.

    timeout: seconds one batch may take. The batch then runs in a worker thread, which works on
        any platform but cannot be killed: a batch that times out keeps running in the
        background (a daemon thread, so it does not keep the process alive) while the error
        is raised.
    record_numbers: what errors call each record (default: its position here). A process that
        scores its share of the work passes the records' numbers in the whole of it, so an
        error names the same records whichever process hit it.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"score got {len(prompts)} prompts but {len(responses)} responses")
    numbers = list(range(len(responses))) if record_numbers is None else list(record_numbers)
    if len(numbers) != len(responses):
        raise ValueError(f"score got {len(numbers)} record numbers for {len(responses)} records")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    name = getattr(reward, "name", type(reward).__name__)
    results: list[dict[str, float]] = []
    with tqdm(
        total=len(responses), desc=f"scoring ({name})", unit="record", disable=not show_progress
    ) as progress:
        for batch, start in enumerate(range(0, len(responses), batch_size)):
            stop = min(start + batch_size, len(responses))
            where = f"reward {name!r} on batch {batch} ({_records(numbers[start:stop])})"
            outputs = _call_batch(
                reward, prompts[start:stop], responses[start:stop], timeout, where
            )
            _check_count(outputs, stop - start, where)
            components, weights = _components_and_weights(reward, name)
            results.extend(
                _with_total(output, numbers[start + offset], components, weights, name)
                for offset, output in enumerate(outputs)
            )
            progress.update(stop - start)
    return results


def _records(numbers: list[int]) -> str:
    """'records 4-7' for consecutive numbers, else 'records 1, 3, 5, ...' (strided shares)."""
    if numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"records {numbers[0]}-{numbers[-1]}"
    shown = ", ".join(map(str, numbers[:8]))
    return f"records {shown}{', …' if len(numbers) > 8 else ''}"


def _call_batch(reward: Reward, prompts, responses, timeout: float | None, where: str):
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["outputs"] = reward(prompts, responses)
        except Exception as error:
            outcome["error"] = error

    if timeout is None:
        run()
    else:
        worker = threading.Thread(target=run, name=f"alol-reward-{where}", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            raise RewardError(
                f"{where} did not finish within {timeout} s; its thread cannot be stopped and "
                "keeps running in the background. Raise the timeout or fix the slow reward"
            )
    if "error" in outcome:
        error = outcome["error"]
        raise RewardError(f"{where} raised {type(error).__name__}: {error}") from error
    return outcome["outputs"]


def _check_count(outputs, expected: int, where: str) -> None:
    if not isinstance(outputs, list | tuple):
        raise RewardError(
            f"{where} returned a {type(outputs).__name__}; expected a list with one entry per record"
        )
    if len(outputs) != expected:
        raise RewardError(f"{where} returned {len(outputs)} results for {expected} records")


def _components_and_weights(reward: Reward, name: str) -> tuple[tuple[str, ...], dict[str, float]]:
    components = tuple(reward.components)
    if "total" in components:
        raise RewardError(
            f"reward {name!r} has a component named 'total', which score() reserves for the "
            "weighted sum; rename that component"
        )
    return components, _weights_of(reward)


def _with_total(
    output: Any, index: int, components: tuple[str, ...], weights: dict[str, float], name: str
) -> dict[str, float]:
    if not isinstance(output, Mapping):
        raise RewardError(
            f"reward {name!r} gave a {type(output).__name__} for record {index}; expected a dict "
            f"with the components {list(components)}"
        )
    unexpected = [key for key in output if key not in components]
    if unexpected:
        raise RewardError(
            f"reward {name!r} gave unexpected components {unexpected} for record {index}; "
            f"its components are {list(components)} (every record must have the same ones)"
        )
    record = {component: _finite(output, component, index, name) for component in components}
    record["total"] = sum(weights.get(c, 1.0) * value for c, value in record.items())
    return record


def _finite(output: Mapping, component: str, index: int, name: str) -> float:
    if component not in output:
        raise RewardError(f"reward {name!r} gave no component {component!r} for record {index}")
    value = output[component]
    if isinstance(value, numbers.Real) and math.isfinite(value):
        return float(value)
    raise RewardError(
        f"reward {name!r} gave {value!r} ({type(value).__name__}) for component {component!r} of "
        f"record {index}; rewards must be finite numbers"
    )
