"""The advantage audit: the share of training answers with A > 0 and the distributions of R,
V(x) and A, as JSON and a histogram. On its own a data-quality report: it says how much of the
data is better than what π_ref already does."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alol.atomic import write_json
from alol.data.table import AdvantageTable
from alol.reports.plots import plot_advantage_histogram

if TYPE_CHECKING:
    pass


_PERCENTILES = (0, 5, 25, 50, 75, 95, 100)


def advantage_stats(table: AdvantageTable) -> dict[str, Any]:
    """Count, fraction with A > 0, and mean/std (population)/percentiles of R, V(x) and A.

    Percentiles interpolate linearly between order statistics (numpy's default).
    """
    if len(table) == 0:
        raise ValueError("the advantage table is empty; there is nothing to summarise")
    return {
        "count": len(table),
        "fraction_positive": float(np.mean(table.advantage > 0)),
        "reward": _summary(table.reward),
        "value": _summary(table.value),
        "advantage": _summary(table.advantage),
        "components": {name: _summary(values) for name, values in sorted(table.components.items())},
    }


def _summary(values: np.ndarray) -> dict[str, float]:
    summary = {"mean": float(np.mean(values)), "std": float(np.std(values))}
    for percentile, quantile in zip(_PERCENTILES, np.percentile(values, _PERCENTILES), strict=True):
        summary[f"p{percentile}"] = float(quantile)
    return summary


def write_advantage_report(table: AdvantageTable, directory: str | Path) -> dict[str, Any]:
    """Write `advantage_stats.json` and `advantage_hist.png` (R, V(x), A) into `directory`.

    This is a data-quality audit on its own: the fraction of pairs with A > 0 is the share
    of the data A-LoL will learn from.
    """
    directory = Path(directory)
    stats = advantage_stats(table)
    write_json(directory / "advantage_stats.json", stats)
    plot_advantage_histogram(table, stats["fraction_positive"], directory / "advantage_hist.png")
    return stats
