"""Gromov et al.'s "similarity across blocks of layers" figure: d(l, n) over (l, n)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from layerprune.scan.residual import Scan  # noqa: E402


def distance_grid(scan: Scan, metric: str, reduction: str) -> np.ndarray:
    """``grid[n - 1, l] = d(l, n)`` for n = 1..L-1 (NaN where l + n > L)."""
    size = scan.num_blocks
    grid = np.full((size - 1, size), np.nan)
    for n in range(1, size):
        grid[n - 1, : size - n + 1] = scan.curve(metric, reduction, n).numpy()
    return grid


def plot_heatmap(scan: Scan, metric: str, reduction: str, path: Path, title: str = "") -> Path:
    """x: first layer l, y: block size n, colour: distance; a dot marks argmin_l per n."""
    fig, ax = plt.subplots(figsize=(7, 5.5))
    draw_heatmap(ax, distance_grid(scan, metric, reduction), f"{metric} distance")
    ax.set_title(title or f"{metric} distance d(x(l), x(l+n)), {reduction} token")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def draw_heatmap(ax, grid: np.ndarray, label: str) -> None:
    """One d(l, n) panel of ``distance_grid`` with its colour bar and the argmin dots."""
    im = ax.imshow(
        grid,
        origin="lower",
        aspect="auto",
        cmap="viridis_r",
        extent=(-0.5, grid.shape[1] - 0.5, 0.5, grid.shape[0] + 0.5),
    )
    best = np.nanargmin(grid, axis=1)
    ax.plot(best, np.arange(1, grid.shape[0] + 1), "o", color="red", ms=3, label="argmin$_l$")
    ax.set_xlabel("first layer l")
    ax.set_ylabel("block size n")
    ax.figure.colorbar(im, ax=ax, label=label)
    ax.legend(loc="upper right")
