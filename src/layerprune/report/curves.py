"""Metric-vs-fraction curves per method: the papers' main figures."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def plot_curves(
    df: pd.DataFrame,
    metrics: list[str],
    path: Path,
    by: str = "method",
    title: str = "",
    x: str = "fraction",
    rows: str | None = None,
) -> Path:
    """One panel per metric, one line per ``by`` value, with lm-eval's stderr as a band
    where the metric has one; a dashed line at the chance level.

    ``x="params_removed"`` plots against the fraction of parameters removed instead, which
    compares block and sublayer methods at equal size. ``rows="model"`` draws one row of
    panels per model, the families side by side.
    """
    df = df.assign(params_removed=1 - df["params_ratio"]) if "params_ratio" in df else df
    groups = list(df.groupby(rows, sort=False)) if rows else [("", df)]
    panels = [(name, part, metric) for name, part in groups for metric in metrics]
    # one row of panels per group; a single metric puts the groups side by side instead
    shape = (1, len(groups)) if len(metrics) == 1 else (len(groups), len(metrics))
    fig, axes = plt.subplots(*shape, figsize=(4.2 * shape[1], 3.6 * shape[0]), squeeze=False)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors = {v: cycle[i % len(cycle)] for i, v in enumerate(sorted(df[by].astype(str).unique()))}
    for ax, (name, part, metric) in zip(axes.flat, panels, strict=True):
        _draw_curves(ax, part, metric, by, x, colors)
        if rows:
            ax.set_title(str(name), fontsize=9)
    for ax in axes[:, 0] if len(metrics) > 1 else axes[0, :1]:
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    fig.savefig(Path(path).with_suffix(".pdf"))
    plt.close(fig)
    return Path(path)


def _draw_curves(ax, df: pd.DataFrame, metric: str, by: str, x: str, colors: dict) -> None:
    """One panel: a line (and stderr band) per ``by`` value, the chance line; a variant has
    the same colour in every panel."""
    for name, group in df.sort_values(x).groupby(by):
        if group[metric].isna().all():
            continue
        (line,) = ax.plot(
            group[x], group[metric], marker="o", label=str(name), color=colors[str(name)]
        )
        stderr = f"{metric}_stderr"
        if stderr in group and group[stderr].notna().any():  # lm-eval's stderr: +-1 band
            se = group[stderr].fillna(0)
            low, high = group[metric] - se, group[metric] + se
            ax.fill_between(group[x], low, high, color=line.get_color(), alpha=0.15, lw=0)
    chance = metric.rsplit("/", 1)[0] + "/chance"
    if chance in df and df[chance].notna().any():
        ax.axhline(df[chance].mean(), color="gray", ls="--", lw=1, label="chance")
    ax.set_xlabel(
        {"fraction": "fraction removed", "params_removed": "fraction of parameters removed"}.get(
            x, x
        )
    )
    ax.set_ylabel(metric)
    if metric.endswith(("/ppl", "_ppl")):
        ax.set_yscale("log")  # perplexities span orders of magnitude once a model breaks
    ax.grid(alpha=0.3)


def plot_bars(
    pruned: pd.DataFrame, base: pd.DataFrame, metrics: list[str], path: Path, title: str = ""
) -> Path:
    """Ablations at one fraction: one bar per variant per metric; dashed: unpruned, dotted: chance.
    Labels carry the share of parameters each variant removed."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.8), squeeze=False)
    labels = list(pruned["variant"])
    if "params_ratio" in pruned:  # variants at one fraction can remove very different amounts
        labels = [
            f"{v} (-{1 - r:.0%})" for v, r in zip(labels, pruned["params_ratio"], strict=True)
        ]
    for ax, metric in zip(axes[0], metrics, strict=True):
        stderr = f"{metric}_stderr"
        yerr = pruned[stderr].fillna(0) if stderr in pruned else None  # lm-eval's stderr
        ax.bar(range(len(labels)), pruned[metric], color="tab:blue", yerr=yerr, capsize=2)
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
        if not base.empty and metric in base:
            ax.axhline(base[metric].mean(), color="black", ls="--", lw=1, label="unpruned")
        chance = metric.rsplit("/", 1)[0] + "/chance"
        if chance in pruned and pruned[chance].notna().any():
            ax.axhline(pruned[chance].mean(), color="gray", ls=":", lw=1, label="chance")
        if metric.endswith(("/ppl", "_ppl")):
            ax.set_yscale("log")
        ax.set_ylabel(metric)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title or f"fraction {pruned['fraction'].iloc[0]}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    fig.savefig(Path(path).with_suffix(".pdf"))
    plt.close(fig)
    return Path(path)
