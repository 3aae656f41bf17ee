"""Block methods: which whole blocks to remove for a given number n.

- ``deeper_layers`` (Gromov et al. Sec. 3.2): l* = argmin_l d(x(l), x(l+n)); remove l*..l*+n-1.
- ``last_layers`` (their simple heuristic): the n blocks just before the final block.
- ``shortgpt`` (Men et al. 2024): the n blocks of lowest Block Influence, any positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from layerprune.errors import LayerpruneError
from layerprune.methods.base import MethodContext, PruningMethod, count_to_remove
from layerprune.plan import PruningPlan
from layerprune.scan.residual import Scan

__all__ = ["DeeperLayers", "LastLayers", "ShortGPT", "count_to_remove"]


def deeper_layers(scan: Scan, n: int, metric: str, reduction: str) -> dict[str, Any]:
    """The n consecutive blocks whose input and output states are closest: the plan's
    ``removed_blocks`` and ``scores``."""
    curve = scan.curve(metric, reduction, n)
    start = int(curve.argmin())
    return {
        "removed_blocks": list(range(start, start + n)),
        "scores": {
            "d(l,n)": [round(float(v), 6) for v in curve],
            "l_star": start,
            "n": n,
            "l_star_by_n": {
                k: int(scan.curve(metric, reduction, k).argmin()) for k in range(1, scan.num_blocks)
            },
        },
    }


def last_layers(num_blocks: int, n: int) -> list[int]:
    """The n deepest blocks, keeping the final block."""
    return list(range(num_blocks - 1 - n, num_blocks - 1))


def shortgpt(scan: Scan, n: int) -> dict[str, Any]:
    """The n blocks with the lowest Block Influence (ties: the earlier block first)."""
    bi = scan.block_influence
    order = sorted(range(scan.num_blocks), key=lambda i: (float(bi[i]), i))
    return {
        "removed_blocks": sorted(order[:n]),
        "scores": {"block_influence": [round(float(v), 6) for v in bi], "n": n},
    }


def draw_scan(ctx: MethodContext, metric: str, reduction: str) -> None:
    """The scan's d(l, n) heatmap (argmin per n marked) into the job folder."""
    from layerprune.report.heatmap import plot_heatmap

    plot_heatmap(
        ctx.scan,
        metric,
        reduction,
        ctx.out_dir / "distance_heatmap.png",
        f"{ctx.title}: {metric} distance d(l, n), {reduction} token",
    )


@dataclass
class DeeperLayers(PruningMethod):
    """Gromov et al.: the n consecutive blocks whose input and output states are closest."""

    name: str = "deeper_layers"
    needs = "scan"
    default_metric = ("angular", "last")
    metrics = ("angular", "cosine", "l2")

    def check_metric(self, metric: str) -> None:
        if metric == "block_influence":
            raise LayerpruneError(
                "deeper_layers compares block inputs with angular, cosine or l2, not "
                "block_influence: use pruning_method=shortgpt"
            )
        super().check_metric(metric)

    def plan(self, ctx: MethodContext) -> PruningPlan:
        if ctx.count == 0:
            return self.make_plan(ctx)
        m = ctx.metric
        draw_scan(ctx, m.name, m.reduction.value)
        chosen = deeper_layers(ctx.scan, ctx.count, m.name, m.reduction.value)
        return self.make_plan(ctx, metric=f"{m.name}/{m.reduction.value}", **chosen)


@dataclass
class LastLayers(PruningMethod):
    """Gromov et al.'s heuristic: the n deepest blocks but the last. No scan."""

    name: str = "last_layers"

    def plan(self, ctx: MethodContext) -> PruningPlan:
        blocks = last_layers(ctx.num_blocks, ctx.count) if ctx.count else []
        return self.make_plan(ctx, removed_blocks=blocks, scores={"n": ctx.count} if blocks else {})


@dataclass
class ShortGPT(PruningMethod):
    """Men et al.: the n blocks of lowest Block Influence."""

    name: str = "shortgpt"
    needs = "scan"
    default_metric = ("block_influence", "mean")
    metrics = ("block_influence",)

    def plan(self, ctx: MethodContext) -> PruningPlan:
        if ctx.count == 0:
            return self.make_plan(ctx)
        draw_scan(ctx, "angular", ctx.metric.reduction.value)  # BI is d(l, l+1) in cosine
        return self.make_plan(ctx, metric="block_influence", **shortgpt(ctx.scan, ctx.count))
