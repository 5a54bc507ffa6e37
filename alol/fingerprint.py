"""Content hashes: of models, records, reward specs and stage inputs, and the cache keys built
from them. A changed input always changes its fingerprint, so no cache or finished stage is
reused for inputs it was not computed from; a copied or moved input keeps it."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alol import __version__
from alol.data.records import RewardRecord
from alol.data.table import FORMAT_VERSION
from alol.rewards.scorers import SCORERS
from alol.rewards.specs import (
    GATED_PARTS,
    RewardSpec,
    is_file_target,
    normalize_spec,
    reward_name,
)


def json_sha256(obj: Any) -> str:
    """sha256 of an object's canonical JSON (sorted keys; non-JSON values by their str)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, memoised by path, size and mtime (a rewritten file is hashed
    again; an unchanged one costs nothing the second time)."""
    path = Path(path).resolve()
    stat = path.stat()
    return _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)


# Config, weights, tokenizer, chat template, and the modules of trust_remote_code models.
_MODEL_FILE_SUFFIXES = {
    ".json",
    ".safetensors",
    ".bin",
    ".model",
    ".txt",
    ".jinja",
    ".tiktoken",
    ".py",
}


_NOT_MODEL_FILES = {"trainer_state.json", "training_args.bin"}


def fingerprint_model(path_or_model: str | Path | torch.nn.Module, tokenizer: Any = None) -> str:
    """A sha256 of everything that determines a model's outputs.

    - A directory: the full content of its top-level config, weight and tokenizer files
      (`*.json`, `*.safetensors`, `*.bin`, `*.model`, `*.txt`, `*.jinja`, `*.tiktoken`, `*.py`,
      but not a Trainer checkpoint's `trainer_state.json`/`training_args.bin`), keyed by file
      name, so a copied or moved directory keeps its fingerprint. Hashing reads every byte
      once (about 1 GB/s); the per-file digests are memoised by path, size and mtime, so later
      calls in the same process are free.
    - A hub id: the same, on its snapshot in the local Hugging Face cache.
    - An in-memory module (a model, a PEFT model, a value head): its config (if any) and every
      tensor of its state_dict. This copies GPU tensors to the CPU; prefer paths for big models.

    `tokenizer`, when given, is hashed in too (needed for in-memory models; a directory
    already holds its tokenizer files).
    """
    digest = hashlib.sha256()
    if isinstance(path_or_model, torch.nn.Module):
        _update_with_module(digest, path_or_model)
    else:
        digest.update(_directory_fingerprint(_model_directory(path_or_model)).encode())
    if tokenizer is not None:
        with tempfile.TemporaryDirectory() as directory:
            tokenizer.save_pretrained(directory)
            digest.update(_directory_fingerprint(Path(directory)).encode())
    return digest.hexdigest()


def _model_directory(name: str | Path) -> Path:
    path = Path(name)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(str(name), local_files_only=True))
    except (LocalEntryNotFoundError, ValueError) as error:
        raise FileNotFoundError(
            f"model {name!r} is neither a directory nor a model in the local Hugging Face cache; "
            "pass the path of a saved model"
        ) from error


def _directory_fingerprint(directory: Path) -> str:
    files = sorted(
        path
        for path in directory.iterdir()
        if path.is_file()
        and path.suffix in _MODEL_FILE_SUFFIXES
        and path.name not in _NOT_MODEL_FILES
    )
    if not files:
        raise FileNotFoundError(
            f"{directory} holds no model, config or tokenizer files to fingerprint"
        )
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


@functools.lru_cache(maxsize=1024)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """`size` and `mtime_ns` are part of the memo key only: a rewritten file is hashed again."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 23):
            digest.update(block)
    return digest.hexdigest()


def _update_with_module(digest: Any, module: torch.nn.Module) -> None:
    config = getattr(module, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        settings = {k: v for k, v in config.to_dict().items() if k != "_name_or_path"}
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}\0{flat.dtype}\0{tuple(tensor.shape)}\n".encode())
        digest.update(flat.view(torch.uint8).numpy())  # the buffer, not a copy


def fingerprint_rendering(tokenizer: Any, string_prompts: str) -> str:
    """A sha256 of how prompts become text for a model: its tokenizer's chat template (None:
    the plain template) and how plain-string prompts meet it (`alol.data.tokenize.render_prompt`)."""
    template = getattr(tokenizer, "chat_template", None)
    return json_sha256({"chat_template": template, "string_prompts": string_prompts})


def fingerprint_records(records: Sequence[RewardRecord]) -> str:
    """A sha256 of what the precompute reads from each record, in order: prompt, response, reward.

    `id` and `source` do not change any number, so they do not change the fingerprint.
    """
    digest = hashlib.sha256()
    for record in records:
        # JSON escapes newlines inside strings, so a newline separates records unambiguously.
        digest.update(_record_line(record) + b"\n")
    return digest.hexdigest()


def record_hashes(records: Sequence[RewardRecord]) -> np.ndarray:
    """Per record, the first 8 bytes of a sha256 of what the precompute reads from it (as
    `fingerprint_records`), as int64: what an `AdvantageTable` keeps of the record behind each
    row, so that joining it with other records is refused."""
    return np.array(
        [
            int.from_bytes(hashlib.sha256(_record_line(r)).digest()[:8], "little", signed=True)
            for r in records
        ],
        dtype=np.int64,
    )


def _record_line(record: RewardRecord) -> bytes:
    line = [record.prompt, record.response, record.reward]
    return json.dumps(line, sort_keys=True, ensure_ascii=False).encode()


def cache_key(
    model_fp: str,
    data_fp: str,
    reward_fp: str | None,
    config_dict: dict[str, Any],
    value_fp: str | None = None,
) -> str:
    """The sha256 that names an advantage table: it changes with every input and only with them.

    `reward_fp` is None when rewards come from the data, `value_fp` (the value head's file)
    None when V(x) = 0; `config_dict` holds the settings that change the numbers
    (`ReferenceConfig.key_fields()`).
    """
    return json_sha256(
        {
            "format_version": FORMAT_VERSION,
            "model": model_fp,
            "data": data_fp,
            "reward": reward_fp,
            "value": value_fp,
            "config": config_dict,
        }
    )


def fingerprint_of(*parts: Any) -> str:
    """The fingerprint of a stage's inputs: fingerprints, settings and counts, in order."""
    return json_sha256(parts)


def spec_fingerprint(spec: RewardSpec) -> str:
    """A sha256 of what the reward computes, so caches can key on it.

    It covers the normalised spec plus: the source file of each callable (a file or a module's
    file; not what that file imports), the content of each classifier's model files and the
    name its scores are logged under (not where its folder is), the version of alol and of each
    built-in scorer's package, and the content of any option value that names a file (or, for a
    built-in scorer, a folder): a reward model or a corpus copied or moved elsewhere keeps its
    fingerprint.
    """
    return json_sha256(_fingerprint_view(normalize_spec(spec)))


def _fingerprint_view(spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec["type"]
    nested = ("components", *GATED_PARTS) if kind == "gated" else ("components",)
    view = {key: _with_file_digests(value) for key, value in spec.items() if key not in nested}
    if kind == "sum":
        view["components"] = [
            {"spec": _fingerprint_view(term["spec"]), "weight": term["weight"]}
            for term in spec["components"]
        ]
    elif kind == "gated":
        view.update((part, _fingerprint_view(spec[part])) for part in GATED_PARTS)
    elif kind == "callable":
        view["source_sha256"] = _source_digest(spec["path"])
    elif kind == "classifier":
        view.pop("path")
        directory = Path(spec["path"])
        view["name"] = reward_name(spec)  # its scores' key: the folder's name when none is given
        view["model_files"] = _classifier_files_digest(directory)
    elif kind in SCORERS:
        view.update(_scorer_folders(spec))
        view["alol_version"] = __version__
        view["requires"] = _package_version(SCORERS[kind].requires)
    return view


def _with_file_digests(value: Any) -> Any:
    """An option (or a kwargs entry, or an item of a list of them) that names a file stands for
    the file's content too."""
    if isinstance(value, Mapping):
        return {key: _with_file_digests(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_with_file_digests(item) for item in value]
    if isinstance(value, str | Path) and os.path.isfile(value):
        return {"file_sha256": file_sha256(value)}
    return value


def _scorer_folders(spec: dict[str, Any]) -> dict[str, Any]:
    """A built-in scorer's option that names a folder (the diversity corpus saved as a
    dataset) stands for every file in it, all of which the scorer reads. A callable's folder
    options stay paths: what a function reads of a folder (a cache, its outputs) is its own."""
    return {
        key: {"folder_sha256": _folder_sha256(Path(value))}
        for key, value in spec.items()
        if key not in ("type", "name") and isinstance(value, str | Path) and os.path.isdir(value)
    }


def _folder_sha256(folder: Path) -> str:
    """Every file below `folder`, by its path inside it and its content."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def _source_digest(reference: str) -> str | None:
    target = reference.rpartition(":")[0]
    if is_file_target(target):
        path = Path(target).expanduser()
    else:
        try:
            module_spec = importlib.util.find_spec(target)
        except (ImportError, ValueError):
            return None
        if module_spec is None or module_spec.origin is None:
            return None
        path = Path(module_spec.origin)
    return file_sha256(path) if path.is_file() else None


def _classifier_files_digest(directory: Path) -> str:
    """Its model files' content as `fingerprint_model` hashes a policy's: what
    `from_pretrained` reads, not a checkpoint left beside it."""
    if not directory.is_dir():
        raise FileNotFoundError(f"classifier reward: model directory {directory} not found")
    return _directory_fingerprint(directory)


def _package_version(package: str | None) -> str | None:
    if package is None:
        return None
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
