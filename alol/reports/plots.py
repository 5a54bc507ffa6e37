"""Plots where a picture says more than a table: training curves, rewards per objective, the
advantage histogram, the value head's fit and each model's reward change against its judges'."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from alol.atomic import write_atomic  # noqa: E402

CURVES = (
    "loss",
    "learning_rate",
    "importance_weight/mean",
    "importance_weight/clip_frac",
    "advantage/mean",
    "rewards/margins",
    "rewards/accuracies",
    "eval_reward",
    "eval_template_share",
    "eval_distinct_2",
)
"""The quantities drawn, when logged; every judge's validation score (`eval_judge/<name>`)
is drawn after them."""

JUDGE_CURVES = "eval_judge/"


def read_metrics(path: str | Path) -> list[dict]:
    """metrics.jsonl rows; a last line torn by a crash is skipped."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def plot_training_curves(metrics_path: str | Path, png_path: str | Path) -> Path | None:
    """One panel per logged quantity of CURVES, and per judge, that the run actually logged."""
    if not Path(metrics_path).exists():
        return None
    rows = read_metrics(metrics_path)
    judges = dict.fromkeys(key for row in rows for key in row if key.startswith(JUDGE_CURVES))
    names = [*CURVES, *judges]
    series = {name: [(row["step"], row[name]) for row in rows if name in row] for name in names}
    series = {name: points for name, points in series.items() if points}
    if not series:
        return None
    columns = min(3, len(series))
    figure, axes = plt.subplots(
        math.ceil(len(series) / columns),
        columns,
        figsize=(4 * columns, 3 * math.ceil(len(series) / columns)),
        squeeze=False,
    )
    for axis, (name, points) in zip(axes.flat, series.items(), strict=False):
        steps, values = zip(*points, strict=True)
        axis.plot(steps, values, marker="." if len(steps) < 30 else None)
        axis.set_title(name)
        axis.set_xlabel("step")
    for axis in list(axes.flat)[len(series) :]:
        axis.axis("off")
    figure.tight_layout()
    return _save(figure, png_path)


def plot_reward_by_objective(totals: dict[str, tuple[float, float]], png_path: str | Path) -> Path:
    """Bar chart of mean test reward (± std across seeds or examples) per objective."""
    names = list(totals)
    means = [totals[n][0] for n in names]
    stds = [totals[n][1] for n in names]
    figure, axis = plt.subplots(figsize=(max(4, 0.9 * len(names) + 2), 3.5))
    axis.bar(names, means, yerr=stds, capsize=4, color="tab:blue")
    axis.set_ylabel("test reward")
    axis.set_title("reward per objective")
    axis.tick_params(axis="x", rotation=30)
    figure.tight_layout()
    return _save(figure, png_path)


def plot_value_fit(report: dict, png_path: str | Path) -> Path:
    """The MSE per epoch and, when held-out points exist, predicted vs target V."""
    figure, (curves, scatter) = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = range(1, len(report["train_mse_per_epoch"]) + 1)
    curves.plot(epochs, report["train_mse_per_epoch"], marker="o", label="train")
    curves.plot(epochs, report["heldout_mse_per_epoch"], marker="o", label="held-out")
    curves.axvline(report["best_epoch"], color="grey", linestyle=":", label="kept epoch")
    curves.set(xlabel="epoch", ylabel="MSE", title="value head fit")
    curves.legend()
    targets, predictions = report["heldout_targets"], report["heldout_predictions"]
    scatter.scatter(targets, predictions, s=12)
    if targets:
        low, high = min(targets + predictions), max(targets + predictions)
        scatter.plot([low, high], [low, high], color="grey", linestyle=":")
    scatter.set(xlabel="target reward", ylabel="predicted V(x)", title="held-out prompts")
    figure.tight_layout()
    return _save(figure, png_path)


def plot_advantage_histogram(table, fraction_positive: float, png_path: str | Path) -> Path:
    """Three histograms side by side: R, V(x) and A = R − V(x), with A = 0 marked."""
    figure, (reward_axes, value_axes, advantage_axes) = plt.subplots(1, 3, figsize=(13, 3.6))
    bins = min(50, max(10, len(table) // 20))
    reward_axes.hist(table.reward, bins=bins, color="tab:green")
    reward_axes.set(title="reward R", xlabel="R", ylabel="examples")
    value_axes.hist(table.value, bins=bins, color="tab:blue")
    value_axes.set(title="value V(x)", xlabel="V(x)")
    advantage_axes.hist(table.advantage, bins=bins, color="tab:orange")
    advantage_axes.axvline(0.0, color="black", linestyle="--", linewidth=1)
    advantage_axes.set(
        title=f"advantage A = R − V(x): {fraction_positive:.1%} positive", xlabel="A"
    )
    figure.tight_layout()
    return _save(figure, png_path)


def plot_reward_model_fit(report: dict, png_path: str | Path) -> Path:
    """Predicted against stored scores on the held-out prompts, with the fit's figures."""
    figure, axis = plt.subplots(figsize=(4.5, 4))
    stored, predicted = report.get("heldout_scores", []), report.get("heldout_predictions", [])
    axis.scatter(stored, predicted, s=8, alpha=0.5)
    if stored:
        low, high = min(stored + predicted), max(stored + predicted)
        axis.plot([low, high], [low, high], color="grey", linestyle=":")
    accuracy = report.get("pairwise_accuracy")
    title = "reward model, held-out prompts"
    if "balanced_accuracy" in report:
        title += f"\naccuracy {report['accuracy']:.2f}, balanced {report['balanced_accuracy']:.2f}"
    elif accuracy is not None and not math.isnan(accuracy):
        title += (
            f"\npairwise accuracy {accuracy:.2f}, Pearson {report.get('pearson', math.nan):.2f}"
        )
    axis.set(xlabel="stored score", ylabel="reward model output", title=title)
    figure.tight_layout()
    return _save(figure, png_path)


def plot_reward_against_judges(
    changes: dict[str, dict[str, tuple[float, float]]],
    flagged: set[str],
    png_path: str | Path,
    title: str = "change from π_ref's answers (± 2 s.e.); red: flagged by the audit",
) -> Path:
    """One panel per judge: each model's change from π_ref in the reward (x) against the
    judge's (y), ± 2 standard errors. A model to the right of 0 and below it gained reward
    that the judge does not confirm; the audit's flagged models are drawn in red."""
    judges = [key for key in next(iter(changes.values())) if key != "reward"]
    columns = 2 if len(judges) == 4 else min(3, len(judges))
    rows = math.ceil(len(judges) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.6 * rows), squeeze=False)
    for axis in list(axes.flat)[len(judges) :]:
        axis.axis("off")
    for axis, judge in zip(axes.flat, judges, strict=False):
        axis.axhline(0.0, color="grey", linewidth=1)
        axis.axvline(0.0, color="grey", linewidth=1)
        for name, change in changes.items():
            (x, x_se), (y, y_se) = change["reward"], change[judge]
            color = "tab:red" if name in flagged else "tab:blue"
            axis.errorbar(x, y, xerr=2 * x_se, yerr=2 * y_se, fmt="o", color=color, capsize=3)
            axis.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        axis.set(xlabel="reward change from π_ref", ylabel=f"{judge} change", title=judge)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return _save(figure, png_path)


def _save(figure, png_path: str | Path) -> Path:
    """Write the figure as a PNG atomically and free it."""
    write_atomic(png_path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    plt.close(figure)
    return Path(png_path)
