"""The precompute's per-example table, its files, and the cache that reuses it.

Training keeps no reference model in memory: this table holds everything the objectives read
from π_ref (response-token log-probs), and for reward data R, V(x) and A = R − V(x). It is
cached on disk under a content hash of every input (`alol.fingerprint.cache_key`), so a
changed input never reuses a stale table.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from alol.atomic import write_atomic, write_json
from alol.distributed import on_main_process
from alol.errors import AlolError
from alol.method.leftover import advantages
from alol.reports.metrics import counted

logger = logging.getLogger(__name__)


FORMAT_VERSION = 1
"""Bump when the table's layout or meaning changes: it is part of every cache key."""


_REFERENCE_ARRAYS = ("ref_logp", "ref_token_logps", "offsets", "response_length", "record_hashes")
_SCORE_ARRAYS = ("reward", "value", "advantage")


_COMPONENT_PREFIX = "component/"


class AdvantageCacheError(AlolError):
    """An advantage cache file is missing or unreadable."""


class TableMismatchError(AlolError):
    """A table joined with other records than those its rows were computed from."""


@dataclass
class AdvantageTable:
    """Per-example results of the precompute pass, aligned with the training records.

    Per-example arrays are float64 `[N]`. The reference log-prob of every response token
    (EOS included, in response order) is stored flat in float32: example `i` owns
    `ref_token_logps[offsets[i]:offsets[i + 1]]`, so ragged responses need no padding.
    R, V(x) and A are absent (None) in a table of reference log-probs alone, such as the
    one DPO's pairs are trained against. `record_hashes` (int64 `[N]`,
    `alol.fingerprint.record_hashes`) names the record behind each row: a join with other
    records is refused (`check_rows`).
    """

    ref_logp: np.ndarray
    ref_token_logps: np.ndarray
    offsets: np.ndarray
    response_length: np.ndarray
    record_hashes: np.ndarray
    reward: np.ndarray | None = None
    value: np.ndarray | None = None
    advantage: np.ndarray | None = None
    components: dict[str, np.ndarray] = field(default_factory=dict)
    key: str = ""
    """The cache key of the inputs this table was computed from ("" when not cached)."""

    def __post_init__(self) -> None:
        count = len(self.ref_logp)
        scores = [getattr(self, name) is not None for name in _SCORE_ARRAYS]
        if any(scores) and not all(scores):
            raise ValueError("give reward, value and advantage together, or none of them")
        for name in ("ref_logp", "response_length", "record_hashes", *_SCORE_ARRAYS):
            if getattr(self, name) is not None and getattr(self, name).shape != (count,):
                raise ValueError(
                    f"'{name}' has shape {getattr(self, name).shape}, expected ({count},)"
                )
        for name, values in self.components.items():
            if values.shape != (count,):
                raise ValueError(
                    f"component '{name}' has shape {values.shape}, expected ({count},)"
                )
        if self.offsets.shape != (count + 1,) or self.offsets[0] != 0:
            raise ValueError(f"'offsets' must have shape ({count + 1},) and start at 0")
        if self.offsets[-1] != len(self.ref_token_logps):
            raise ValueError("'offsets' do not cover 'ref_token_logps' exactly")
        if not np.array_equal(np.diff(self.offsets), self.response_length):
            raise ValueError("'offsets' disagree with 'response_length'")

    @classmethod
    def from_examples(
        cls,
        reward: Sequence[float] | np.ndarray | None,
        value: Sequence[float] | np.ndarray | None,
        token_logps: Sequence[np.ndarray],
        components: dict[str, Sequence[float]] | None = None,
        *,
        record_hashes: np.ndarray,
    ) -> AdvantageTable:
        """Assemble the table from per-example results, A = R − V(x) among them
        (`alol.method.leftover.advantages`), and the hashes of the records they were computed
        from. Without `reward` (and `value`) the table holds reference log-probs only."""
        if reward is not None:
            reward = np.asarray(reward, dtype=np.float64)
            value = np.asarray(value, dtype=np.float64)
        response_length = np.array([len(t) for t in token_logps], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(response_length)]).astype(np.int64)
        flat = [np.asarray(t, dtype=np.float32) for t in token_logps]
        return cls(
            reward=reward,
            value=value,
            advantage=None if reward is None else advantages(reward, value),
            ref_logp=np.array([t.sum(dtype=np.float64) for t in flat], dtype=np.float64),
            ref_token_logps=np.concatenate(flat) if flat else np.zeros(0, np.float32),
            offsets=offsets,
            response_length=response_length,
            record_hashes=np.asarray(record_hashes, dtype=np.int64),
            components={k: np.asarray(v, dtype=np.float64) for k, v in (components or {}).items()},
        )

    def __len__(self) -> int:
        return len(self.ref_logp)

    @property
    def has_scores(self) -> bool:
        """Whether the table holds R, V(x) and A, not only reference log-probs."""
        return self.reward is not None

    def _array_names(self) -> tuple[str, ...]:
        return _REFERENCE_ARRAYS + (_SCORE_ARRAYS if self.has_scores else ())

    def check_rows(self, record_hashes: np.ndarray, sources: Sequence[str]) -> None:
        """Refuse records other than those the rows were computed from, or in another order:
        joined by index, an example would take another's R, A and log-probs. `sources` names
        each record (file:line) for the error."""
        advice = "recompute the table from the records it is joined with (`alol advantage`)"
        if len(record_hashes) != len(self):
            raise TableMismatchError(
                f"{counted(len(record_hashes), 'record')} joined with a table of "
                f"{counted(len(self), 'row')}: it was computed from other records; {advice}"
            )
        differ = np.flatnonzero(np.asarray(record_hashes) != self.record_hashes)
        if len(differ):
            first = int(differ[0])
            source = f" ({sources[first]})" if sources[first] else ""
            raise TableMismatchError(
                f"record {first}{source} is not the record row {first} of the table was "
                f"computed from ({len(differ)} of {counted(len(self), 'row')} differ); {advice}"
            )

    def token_logps(self, index: int) -> np.ndarray:
        """Reference log-probs of example `index`'s response tokens, in order, EOS last."""
        return self.ref_token_logps[self.offsets[index] : self.offsets[index + 1]]

    def save(self, path: str | Path) -> Path:
        """Write the arrays as safetensors and a small JSON sidecar for humans, each atomically.

        The key is stored in both; `load` refuses a pair that disagrees (a write interrupted
        between the two files).
        """
        path = Path(path)
        arrays = {name: np.ascontiguousarray(getattr(self, name)) for name in self._array_names()}
        for name, values in self.components.items():
            arrays[_COMPONENT_PREFIX + name] = np.ascontiguousarray(values)
        metadata = {"key": self.key, "format_version": str(FORMAT_VERSION)}
        write_atomic(path, lambda tmp: save_file(arrays, tmp, metadata=metadata))
        write_json(
            sidecar_path(path),
            {
                "key": self.key,
                "format_version": FORMAT_VERSION,
                "count": len(self),
                "components": sorted(self.components),
                "fraction_positive": (
                    float(np.mean(self.advantage > 0)) if self.has_scores and len(self) else None
                ),
            },
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> AdvantageTable:
        """Read a table written by `save`; a missing or damaged cache says how to rebuild it."""
        path = Path(path)
        sidecar = sidecar_path(path)
        for required in (path, sidecar):
            if not required.is_file():
                raise AdvantageCacheError(
                    f"advantage cache file {required} not found; run `alol advantage` to compute it"
                )
        try:
            with safe_open(str(path), framework="numpy") as handle:
                metadata = handle.metadata() or {}
                arrays = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
            info = json.loads(sidecar.read_text(encoding="utf-8"))
            return cls._from_stored(arrays, metadata, info)
        except (OSError, ValueError, SafetensorError) as error:
            raise AdvantageCacheError(
                f"advantage cache {path} is unreadable ({error}); delete it and {sidecar.name}, "
                "then rerun `alol advantage` to recompute it"
            ) from error

    @classmethod
    def _from_stored(
        cls, arrays: dict[str, np.ndarray], metadata: dict[str, str], info: dict[str, Any]
    ) -> AdvantageTable:
        if metadata.get("format_version") != str(FORMAT_VERSION):
            raise ValueError(
                f"written in format {metadata.get('format_version')}, this alol reads {FORMAT_VERSION}"
            )
        if info.get("key") != metadata.get("key"):
            raise ValueError("the JSON sidecar and the tensors name different keys")
        names = _REFERENCE_ARRAYS + (_SCORE_ARRAYS if "reward" in arrays else ())
        missing = [name for name in names if name not in arrays]
        if missing:
            raise ValueError(f"arrays {missing} are missing")
        components = {
            name.removeprefix(_COMPONENT_PREFIX): values
            for name, values in arrays.items()
            if name.startswith(_COMPONENT_PREFIX)
        }
        return cls(
            **{name: arrays[name] for name in names},
            components=components,
            key=metadata["key"],
        )


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar that sits beside a table's safetensors file."""
    return Path(path).with_suffix(".json")


ADVANTAGES = "advantages"
"""The file name of a table with R, V(x) and A (the advantage stage's)."""

REFERENCE_LOGPS = "reference_logps"
"""The file name of a table of π_ref's log-probs alone (DPO's pairs, KTO's sequences)."""


def cache_path(cache_dir: str | Path, key: str, name: str = ADVANTAGES) -> Path:
    return Path(cache_dir) / f"{name}-{key[:16]}.safetensors"


def load_or_compute(
    cache_dir: str | Path, key: str, compute: Callable[[], AdvantageTable], name: str = ADVANTAGES
) -> AdvantageTable:
    """Reuse the cached table for `key` when there is one, else compute it and cache it in
    `<cache_dir>/<name>-<key>.safetensors`.

    Under several processes all of them compute (each its share, see `compute_advantages`),
    the main process writes the cache, and the others wait until it is in place.
    """
    path = cache_path(cache_dir, key, name)
    if path.exists():
        try:
            table = AdvantageTable.load(path)
        except AdvantageCacheError as error:
            # alol rebuilds it here, so the cause alone, not the advice to delete and rerun
            logger.warning(
                "recomputing %s, which cannot be reused: %s", path, error.__cause__ or error
            )
        else:
            if table.key == key:
                logger.debug("reusing advantage cache %s", path)
                return table
            logger.info("advantage cache %s was computed from other inputs; recomputing", path)
    table = replace(compute(), key=key)
    on_main_process(lambda: table.save(path))
    what = "advantages" if table.has_scores else "reference log-probs"
    logger.info(
        "computed %s for %s and cached them in %s", what, counted(len(table), "example"), path
    )
    return table
