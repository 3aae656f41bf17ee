"""FinerCut figures: which sublayers went (Fig. 4 style) and the discrepancy of each step."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from layerprune.plan import PruningPlan  # noqa: E402


def plot_removed_map(plan: PruningPlan, num_blocks: int, path: Path, title: str = "") -> Path:
    """Rows attention / MLP, columns blocks; a filled cell is a removed sublayer."""
    fig, ax = plt.subplots(figsize=(max(6, num_blocks * 0.28), 1.9))
    attention = plan.removed_attention + plan.removed_blocks
    draw_removed_map(ax, attention, plan.removed_mlp + plan.removed_blocks, num_blocks, title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def draw_removed_map(ax, attention: list[int], mlp: list[int], num_blocks: int, title="") -> None:
    """One panel of the map: the removed attention (top row) and MLP (bottom row) per block."""
    grid = np.zeros((2, num_blocks))
    grid[0, list(attention)] = 1
    grid[1, list(mlp)] = 1
    ax.imshow(grid, cmap="Greys", vmin=0, vmax=1.4, aspect="auto")
    ax.set_yticks([0, 1], ["attention", "MLP"])
    ax.set_xticks(range(0, num_blocks, max(1, num_blocks // 15)))
    ax.set_xlabel("block")
    n_attn, n_mlp = int(grid[0].sum()), int(grid[1].sum())
    ax.set_title(title or f"removed: {n_attn} attention, {n_mlp} MLP of {num_blocks} blocks")


def plot_discrepancy_curve(order: list, path: Path, metric: str, mark: int = 0) -> Path:
    """Discrepancy after each greedy step (log scale); a line marks this job's count."""
    values = [d for _, _, d in order]
    kinds = [k for k, _, _ in order]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    steps = np.arange(1, len(values) + 1)
    ax.plot(steps, values, color="gray", lw=1)
    for kind, color in (("attention", "tab:blue"), ("mlp", "tab:orange"), ("block", "tab:green")):
        sel = [i for i, k in enumerate(kinds) if k == kind]
        if sel:
            ax.scatter(steps[sel], np.array(values)[sel], s=12, color=color, label=kind)
    if mark:
        ax.axvline(mark, color="red", ls="--", lw=1, label=f"this job: {mark}")
    ax.set_yscale("log")
    ax.set_xlabel("sublayers removed")
    ax.set_ylabel(f"{metric} discrepancy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
