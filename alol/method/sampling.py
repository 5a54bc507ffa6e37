"""Which training examples are drawn: A-LoL's priority sampling (with replacement, ∝ A; ∝ R for
the reward baselines; uniform otherwise), and KTO's whole blocks. Every draw is deterministic per
(seed, epoch), which is what makes `--resume` replay the remaining batches exactly. How the
draws are then cut into batches is `alol.data.batching`."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import torch

Sampling = Literal["uniform", "advantage", "reward"]
"""How training examples are drawn (`alol.choices.SAMPLING_CHOICES`)."""


class PrioritySampler(torch.utils.data.Sampler[int]):
    """Draw dataset indices with probability ∝ weight, reproducibly: with replacement (the
    paper's priority sampling), or `in_passes`: pass after pass over the examples of weight > 0,
    each drawn once per pass, in an order drawn ∝ weight. When the budget is far below one pass
    (the paper's scale) the two draw nearly the same examples; on a small dataset `in_passes`
    keeps a few top-weighted examples from being drawn dozens of times.

    The draw depends only on (seed, epoch): iterating twice gives the same order, so a resumed
    run that skips its first k batches sees exactly the batches it would have seen. With
    `world_size > 1` every rank makes the same global draw, padded to a multiple of
    `world_size` by drawing further, and takes the strided share `rank::world_size`.
    """

    _CHUNK = 1 << 16
    """Draws are made in fixed-size chunks, so a longer draw extends a shorter one."""

    def __init__(
        self,
        indices: Sequence[int] | np.ndarray,
        weights: Sequence[float] | np.ndarray | None,
        num_samples: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        in_passes: bool = False,
    ) -> None:
        self.indices = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        if len(self.indices) == 0:
            raise ValueError("PrioritySampler needs at least one index to draw from")
        if weights is None:
            self.weights = torch.ones(len(self.indices), dtype=torch.float64)
        else:
            self.weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
            if self.weights.shape != self.indices.shape:
                raise ValueError(f"got {len(self.indices)} indices but {len(self.weights)} weights")
            if (
                not torch.all(torch.isfinite(self.weights) & (self.weights >= 0))
                or self.weights.sum() <= 0
            ):
                raise ValueError("sampling weights must be finite, ≥ 0, and not all 0")
        if num_samples < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need num_samples ≥ 1 and 0 ≤ rank < world_size, got {num_samples}, {rank}, {world_size}"
            )
        self.num_samples = num_samples
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.in_passes = in_passes
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.world_size)

    def __iter__(self) -> Iterator[int]:
        global_draw = self._global_draw(len(self) * self.world_size)
        return iter(global_draw[self.rank :: self.world_size].tolist())

    def _global_draw(self, count: int) -> torch.Tensor:
        return torch.tensor(list(itertools.islice(self.draws(), count)), dtype=torch.long)

    def draws(self) -> Iterator[int]:
        """The endless global draw of this (seed, epoch), chunk by chunk: every rank's share and
        any token-budget batching read the same stream."""
        # SeedSequence mixes (seed, epoch), so seed 0 epoch 1 and seed 1 epoch 0 differ.
        state = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1, dtype=np.uint64)[
            0
        ]
        generator = torch.Generator().manual_seed(int(state))
        if self.in_passes:
            yield from self._passes(generator)
        while True:
            chunk = torch.multinomial(
                self.weights, self._CHUNK, replacement=True, generator=generator
            )
            yield from self.indices[chunk].tolist()

    def _passes(self, generator: torch.Generator) -> Iterator[int]:
        drawable = torch.nonzero(self.weights > 0).flatten()
        while True:
            order = torch.multinomial(
                self.weights[drawable], len(drawable), replacement=False, generator=generator
            )
            yield from self.indices[drawable[order]].tolist()


class BlockSampler(torch.utils.data.Sampler[int]):
    """Whole blocks of consecutive dataset rows, in a seeded order: KTO's batches, whose
    mismatched pairs were formed inside each block (`alol.method.kto`). Each pass over the data visits
    every block once, in an order that depends only on (seed, pass, epoch)."""

    def __init__(self, num_rows: int, block_size: int, num_samples: int, seed: int) -> None:
        if block_size < 1 or num_rows % block_size:
            raise ValueError(
                f"a block sampler needs whole blocks: {num_rows} rows in blocks of {block_size}"
            )
        self.num_blocks = num_rows // block_size
        self.block_size = block_size
        self.num_samples = -(-num_samples // block_size) * block_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        rows = []
        for visit in itertools.count():
            if len(rows) >= self.num_samples:
                break
            rng = np.random.default_rng([self.seed, self.epoch, visit])
            for block in rng.permutation(self.num_blocks).tolist():
                rows += range(block * self.block_size, (block + 1) * self.block_size)
        return iter(rows[: self.num_samples])
