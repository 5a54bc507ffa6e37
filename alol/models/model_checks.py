"""A model a setting names, checked before any weight loads: an existing folder that holds a
model and its tokenizer (or a model-hub id, looked up once), a causal language model when it
is to be a policy, and weights that fit its config.

Left to transformers, a mistyped relative path becomes a hub request with half a minute of
retries, a mistyped absolute one "Repo id must be in the form …", a BERT classifier loads as
`BertLMHeadModel` and trains attending to later tokens, and weights of another shape start at
random with a report that alol's console hides.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, try_to_load_from_cache
from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError
from huggingface_hub.utils import validate_repo_id
from transformers import AutoConfig
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

from alol.errors import AlolError
from alol.reports.metrics import counted

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")

DECODER_EXAMPLES = "GPT-2, Llama, Qwen2, SmolLM2"


def check_model(name: str | Path, *, causal: bool = True) -> None:
    """Refuse, in one line, a model that is no folder (nor a hub id that exists), a folder
    without a model or tokenizer, or (`causal`) one that is not a causal language model."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        check_model_folder(folder)
    else:
        check_hub_id(str(name))
    if causal:
        check_causal_lm(name)


def check_model_folder(folder: Path) -> None:
    """A local folder must hold a model and its tokenizer, as `save_pretrained` writes them:
    otherwise transformers fails with an error about whatever file it looked for last (an
    empty folder gives a sentencepiece error)."""
    if not (folder / "config.json").is_file():
        raise AlolError(
            f"{folder} is not a model folder: it has no config.json. Point to the folder that "
            "model.save_pretrained() (and tokenizer.save_pretrained()) wrote."
        )
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise AlolError(
            f"{folder} has a model but no tokenizer ({', '.join(TOKENIZER_FILES)}): save the "
            "tokenizer into the same folder with tokenizer.save_pretrained()."
        )


def check_hub_id(name: str) -> None:
    """`name` is no folder: it must be a hub id that is in the local cache or on the hub. A
    name that cannot be a hub id (a path) never reaches the network."""
    if not _could_be_hub_id(name):
        where = "" if Path(name).is_absolute() else f" (relative to {Path.cwd()})"
        raise AlolError(f"no such model folder: {name}{where}")
    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "false", "no", ""):
        raise AlolError(
            f"no folder {name} here, and the model {name} is not in the local Hugging Face "
            "cache (HF_HUB_OFFLINE is set); give the path of a saved model"
        )
    _look_up_on_hub(name)


def _could_be_hub_id(name: str) -> bool:
    if name.startswith((".", "/", "~")) or "\\" in name:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _look_up_on_hub(name: str) -> None:
    """One request, no retries: a missing model or an unreachable hub is said at once."""
    try:
        HfApi().model_info(name, timeout=10)
    except RepositoryNotFoundError:
        raise AlolError(
            f"no folder {name} here, and the model hub has no model {name} (or it is private "
            "or gated: log in with `hf auth login`); give the path of a saved model"
        ) from None
    except Exception as error:  # the HTTP client's own errors: no network, a proxy, a timeout
        raise AlolError(
            f"no folder {name} here, and the model hub cannot be reached to fetch the model "
            f"{name} ({type(error).__name__}: {error}); give the path of a saved model, or "
            f"download it where there is a network (`hf download {name}`)"
        ) from None


def check_causal_lm(name: str | Path) -> None:
    """Only a decoder-only model can be a policy: read from its config, before any weight."""
    try:
        config = AutoConfig.from_pretrained(name)
    except ValueError as error:  # an unknown model_type
        raise AlolError(
            f"{name}: transformers cannot read its config.json ({str(error).splitlines()[0]})"
        ) from None
    model_type = getattr(config, "model_type", None)
    architectures = list(getattr(config, "architectures", None) or [])
    saved_as = architectures[0] if architectures else f"model type {model_type!r}"
    causal_classes = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        reason = f"a {saved_as}, whose model type {model_type!r} has no causal-LM class"
    elif config.is_encoder_decoder or (
        model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not config.is_decoder
    ):
        reason = f"a {saved_as}, an encoder that attends to later tokens"
    elif architectures and not causal_classes & set(architectures):
        reason = f"saved as {saved_as}, which has no language-model head"
    else:
        return
    raise AlolError(
        f"{name} is not a causal language model ({reason}); a policy or reference must be a "
        f"decoder-only model that AutoModelForCausalLM loads ({DECODER_EXAMPLES}, …)"
    )


def check_loaded_weights(name: str | Path, loading_info: dict[str, Any]) -> None:
    """`from_pretrained(..., output_loading_info=True, ignore_mismatched_sizes=True)` starts
    a tensor whose weights are missing or of another shape at random; refuse that instead."""
    mismatched = sorted(loading_info.get("mismatched_keys") or [])
    if mismatched:
        key, stored, expected = mismatched[0]
        raise AlolError(
            f"{name}: the weights do not fit config.json ({counted(len(mismatched), 'tensor')}, e.g. "
            f"{key} is {list(stored)} in the weights but {list(expected)} by the config); "
            "the folder mixes files of two models: save the model again with save_pretrained()"
        )
    missing = sorted(loading_info.get("missing_keys") or [])
    if missing:
        raise AlolError(
            f"{name}: the weights lack {counted(len(missing), 'tensor')} of the model config.json "
            f"describes (e.g. {missing[0]}), which would start at random; the folder mixes "
            "files of two models: save the model again with save_pretrained()"
        )
