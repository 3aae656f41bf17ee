"""Metric-vs-fraction curves per method: the papers' main figures."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from layerprune.report import style  # noqa: E402

MAX_COLUMNS = 4  # a wider row is unreadable at paper width
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]


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
    where the metric has one; a dashed line at the chance level and a dotted one at the
    majority-class rate where the table has ``<task>/majority``; a caption says what they are.

    Panels wrap into a grid of at most ``MAX_COLUMNS`` columns (8 tasks: 2 x 4). A variant
    "method[ + healing]" has its method's colour and its healing's line style
    (``report.style``), as in every other figure. ``x="params_removed"`` plots against the
    fraction of parameters removed instead, which compares block and sublayer methods at equal
    size. ``rows="model"`` gives each model its own rows of panels (models in the papers'
    order); a single metric puts the groups side by side instead.
    """
    df = df.assign(params_removed=1 - df["params_ratio"]) if "params_ratio" in df else df
    groups = list(df.groupby(rows, sort=False)) if rows else [("", df)]
    if rows == "model":
        order = {m: i for i, m in enumerate(style.model_order(str(n) for n, _ in groups))}
        groups.sort(key=lambda g: order[str(g[0])])
    cells = _grid(len(groups), len(metrics))
    nrows, ncols = max(r for r, _ in cells) + 1, max(c for _, c in cells) + 1
    styles = _styles(df[by].astype(str).unique())
    caption = []  # what the figure draws besides the curves, said once below it
    width, height = 4.2 * ncols, 3.6 * nrows
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False)
    panels = [
        (g, name, part, metric) for g, (name, part) in enumerate(groups) for metric in metrics
    ]
    drawn = set()
    for (g, name, part, metric), (r, c) in zip(panels, cells, strict=True):
        ax = axes[r, c]
        drawn.add((r, c))
        caption += _draw_curves(ax, part, metric, by, x, styles)
        if rows:  # a model row says what the model is, not its config name
            label = style.model_title(str(name)) if rows == "model" else str(name)
            ax.set_title(label, fontsize=9)
        if (r, c) == cells[len(metrics) * g if len(metrics) > 1 else 0]:
            ax.legend(fontsize=8)  # the first panel of each group (the lines are the same)
    for r, c in {(r, c) for r in range(nrows) for c in range(ncols)} - drawn:
        axes[r, c].set_visible(False)
    notes = {
        "band": style.BAND,
        "chance": "dashed grey: chance (1 / #choices)",
        "majority": "dotted grey: majority-class rate of the evaluated items",
    }
    text = "; ".join(notes[k] for k in notes if k in caption)
    bottom = 0.0
    if text:
        lines = textwrap.wrap(text, width=max(40, int(width * 16)))
        bottom = min(0.3, (0.1 + 0.17 * len(lines)) / height)
        fig.text(0.5, 0.01, "\n".join(lines), ha="center", va="bottom", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=120)
    fig.savefig(Path(path).with_suffix(".pdf"), metadata={"CreationDate": None})  # reproducible
    plt.close(fig)
    return Path(path)


def _grid(groups: int, metrics: int) -> list[tuple[int, int]]:
    """(row, column) of each (group, metric) panel, groups outer: each group starts a row and
    wraps its metrics at ``MAX_COLUMNS``; one metric lays the groups out as the panels."""
    if metrics == 1:
        groups, metrics = 1, groups
    ncols = min(MAX_COLUMNS, metrics)
    per_group = -(-metrics // ncols)
    return [(g * per_group + j // ncols, j % ncols) for g in range(groups) for j in range(metrics)]


def _styles(variants) -> dict[str, dict]:
    """Line keywords per variant: ``style.line`` (colour by method, style by healing), and a
    marker of its own where two variants would otherwise look the same."""
    out, seen = {}, {}
    for v in sorted(variants):
        kw = style.line(v)
        key = (kw["color"], str(kw["ls"]))
        out[v] = {**kw, "marker": MARKERS[seen.get(key, 0) % len(MARKERS)]}
        seen[key] = seen.get(key, 0) + 1
    return out


def _draw_curves(ax, df: pd.DataFrame, metric: str, by: str, x: str, styles: dict) -> list[str]:
    """One panel: a line (and stderr band) per ``by`` value, the chance and majority lines; a
    variant looks the same in every panel. Returns what it drew besides the curves."""
    drew = []
    for name, group in df.sort_values(x).groupby(by):
        if group[metric].isna().all():
            continue
        kw = styles[str(name)]
        ax.plot(group[x], group[metric], label=str(name), **kw)
        stderr = f"{metric}_stderr"
        if stderr in group and group[stderr].notna().any():  # lm-eval's stderr: +-1 band
            se = group[stderr].fillna(0)
            low, high = group[metric] - se, group[metric] + se
            ax.fill_between(group[x], low, high, color=kw["color"], alpha=0.15, lw=0)
            drew.append("band")
    task = metric.rsplit("/", 1)[0]
    for what, ls in (("chance", "--"), ("majority", ":")):
        column = f"{task}/{what}"
        if column in df and df[column].notna().any():
            ax.axhline(df[column].mean(), color="gray", ls=ls, lw=1, label=what)
            drew.append(what)
    ax.set_xlabel(
        {"fraction": "fraction removed", "params_removed": "fraction of parameters removed"}.get(
            x, x
        )
    )
    ax.set_ylabel(metric)
    if metric.endswith(("/ppl", "_ppl")):
        ax.set_yscale("log")  # perplexities span orders of magnitude once a model breaks
    ax.grid(alpha=0.3)
    return drew


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
    fig.savefig(Path(path).with_suffix(".pdf"), metadata={"CreationDate": None})  # reproducible
    plt.close(fig)
    return Path(path)
