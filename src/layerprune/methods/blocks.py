"""Block methods: which whole blocks to remove for a given number n.

- ``deeper_layers`` (Gromov et al. Sec. 3.2): l* = argmin_l d(x(l), x(l+n)); remove l*..l*+n-1.
- ``last_layers`` (their simple heuristic): the n blocks just before the final block.
- ``shortgpt`` (Men et al. 2024): the n blocks of lowest Block Influence, any positions.
"""

from __future__ import annotations

from dataclasses import dataclass

from layerprune.errors import LayerpruneError
from layerprune.methods.base import MethodContext, PruningMethod, count_to_remove
from layerprune.plan import PruningPlan
from layerprune.scan.residual import Scan

__all__ = ["DeeperLayers", "LastLayers", "ShortGPT", "count_to_remove"]


def deeper_layers(scan: Scan, n: int, metric: str, reduction: str) -> PruningPlan:
    """The n consecutive blocks whose input and output states are closest."""
    curve = scan.curve(metric, reduction, n)
    start = int(curve.argmin())
    return PruningPlan(
        method="deeper_layers",
        metric=f"{metric}/{reduction}",
        fraction=0.0,
        num_candidates=scan.num_blocks,
        removed_blocks=list(range(start, start + n)),
        scores={
            "d(l,n)": [round(float(v), 6) for v in curve],
            "l_star": start,
            "n": n,
            "l_star_by_n": {
                k: int(scan.curve(metric, reduction, k).argmin()) for k in range(1, scan.num_blocks)
            },
        },
    )


def last_layers(num_blocks: int, n: int) -> PruningPlan:
    """The n deepest blocks, keeping the final block."""
    return PruningPlan(
        method="last_layers",
        metric=None,
        fraction=0.0,
        num_candidates=num_blocks,
        removed_blocks=list(range(num_blocks - 1 - n, num_blocks - 1)),
        scores={"n": n},
    )


def shortgpt(scan: Scan, n: int) -> PruningPlan:
    """The n blocks with the lowest Block Influence (ties: the earlier block first)."""
    bi = scan.block_influence
    order = sorted(range(scan.num_blocks), key=lambda i: (float(bi[i]), i))
    return PruningPlan(
        method="shortgpt",
        metric="block_influence",
        fraction=0.0,
        num_candidates=scan.num_blocks,
        removed_blocks=sorted(order[:n]),
        scores={"block_influence": [round(float(v), 6) for v in bi], "n": n},
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
        n = self.count(ctx.fraction, ctx.num_blocks)
        if n == 0:
            return self.empty_plan(ctx)
        return deeper_layers(ctx.scan, n, ctx.metric, ctx.reduction)


@dataclass
class LastLayers(PruningMethod):
    """Gromov et al.'s heuristic: the n deepest blocks but the last. No scan."""

    name: str = "last_layers"

    def plan(self, ctx: MethodContext) -> PruningPlan:
        n = self.count(ctx.fraction, ctx.num_blocks)
        return last_layers(ctx.num_blocks, n) if n else self.empty_plan(ctx)


@dataclass
class ShortGPT(PruningMethod):
    """Men et al.: the n blocks of lowest Block Influence."""

    name: str = "shortgpt"
    needs = "scan"
    default_metric = ("block_influence", "mean")
    metrics = ("block_influence",)

    def plan(self, ctx: MethodContext) -> PruningPlan:
        n = self.count(ctx.fraction, ctx.num_blocks)
        return shortgpt(ctx.scan, n) if n else self.empty_plan(ctx)
