"""What pruning buys, drawn: accuracy kept against measured speedup (with the Pareto front),
and measured speedup against the ideal the removed FLOPs and bytes allow.

Both read the report table (``report/table.py``): ``speed/<figure>`` columns are pruned /
unpruned ratios measured in one process, ``ideal/<kind>`` the ideals (``speed.py``).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from layerprune.report.style import color, model_order  # noqa: E402


def decode_batches(df: pd.DataFrame) -> list[int]:
    """The decode batches the table has speedups for, smallest first."""
    cols = [c for c in df if c.startswith("speed/decode_b") and c.endswith("_tokens_per_s")]
    return sorted(int(c.split("_b")[1].split("_")[0]) for c in cols)


def pareto(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The points no other point beats on both ``x`` and ``y`` (higher is better), by x."""
    pts = points.sort_values([x, y], ascending=[False, False])
    best, keep = float("-inf"), []
    for i, row in pts.iterrows():
        if row[y] > best:
            keep.append(i)
            best = row[y]
    return points.loc[keep].sort_values(x)


def plot_retention_vs_speedup(df: pd.DataFrame, path: Path, y: str = "mean_retention") -> list:
    """Per model (rows) and decode batch (columns: the smallest and the largest): ``y``
    against the measured decode speedup, a marker per method and fraction (colour: method;
    filled: unhealed), the Pareto front dashed. Returns ``[(model, batch, front rows)]``."""
    df = df[df[y].notna()]
    batches = decode_batches(df)
    batches = sorted({batches[0], batches[-1]}) if batches else []
    models = model_order(df["model"])
    if not batches or not models:
        return []
    fig, axes = plt.subplots(
        len(models), len(batches), figsize=(4.6 * len(batches), 3.6 * len(models)), squeeze=False
    )
    fronts = []
    for r, model in enumerate(models):
        part = df[(df["model"] == model) & df[f"speed/decode_b{batches[0]}_tokens_per_s"].notna()]
        for c, b in enumerate(batches):
            ax, x = axes[r, c], f"speed/decode_b{b}_tokens_per_s"
            for _, row in part.iterrows():
                healed = row.get("healing", "none") not in ("none", None)
                ax.scatter(
                    row[x],
                    row[y],
                    color=color(row["method"]),
                    s=36,
                    facecolors="none" if healed else color(row["method"]),
                )
                ax.annotate(
                    f"{row['fraction']:.3g}",
                    (row[x], row[y]),
                    fontsize=6,
                    xytext=(3, 2),
                    textcoords="offset points",
                )
            front = pareto(part, x, y)
            ax.plot(front[x], front[y], "k--", lw=0.8, label="Pareto front")
            fronts.append((model, b, front))
            ax.axvline(1.0, color="gray", lw=0.6)
            ax.set_title(f"{model}: decode batch {b}", fontsize=9)
            ax.set_xlabel("measured decode speedup (pruned / unpruned tokens/s)")
            ax.set_ylabel(y.replace("_", " "))
            ax.grid(alpha=0.3)
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=color(m), label=m)
        for m in sorted(df["method"].unique())
    ]
    handles.append(plt.Line2D([], [], marker="o", ls="", mfc="none", color="gray", label="healed"))
    handles.append(plt.Line2D([], [], ls="--", color="k", label="Pareto front"))
    axes[0, 0].legend(handles=handles, fontsize=7)
    fig.suptitle("Accuracy kept against measured speed (labels: fraction removed)", fontsize=10)
    _save(fig, path)
    return fronts


def plot_measured_vs_ideal(df: pd.DataFrame, path: Path) -> None:
    """Measured prefill and decode speedups against the FLOP / byte ideal, per model."""
    kinds = []
    for c in df:
        if c.startswith("speed/prefill_b") and c.endswith("_tokens_per_s"):
            kinds.append((c, "ideal/prefill", f"prefill {c.split('_')[1]}"))
    for b in decode_batches(df):
        kinds.append((f"speed/decode_b{b}_tokens_per_s", f"ideal/decode_b{b}", f"decode b{b}"))
    kinds = [k for k in kinds if k[1] in df]
    if not kinds:
        return
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.8 * len(kinds), 3.6), squeeze=False)
    for ax, (measured, ideal, label) in zip(axes[0], kinds, strict=True):
        part = df[df[measured].notna() & df[ideal].notna()]
        for model in model_order(part["model"]):
            m = part[part["model"] == model]
            ax.scatter(m[ideal], m[measured], s=24, label=model)
        top = max(1.0, part[[ideal, measured]].max().max()) * 1.05
        ax.plot([1, top], [1, top], "k:", lw=0.8, label="measured = ideal")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("ideal speedup (removed FLOPs / bytes)")
        ax.set_ylabel("measured speedup")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    fig.savefig(Path(path).with_suffix(".pdf"), metadata={"CreationDate": None})  # reproducible
    plt.close(fig)
