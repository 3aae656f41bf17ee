"""Block methods: which whole blocks to remove for a given number n.

- ``deeper_layers`` (Gromov et al. Sec. 3.2): l* = argmin_l d(x(l), x(l+n)); remove l*..l*+n-1.
- ``last_layers`` (their simple heuristic): the n blocks just before the final block.
- ``shortgpt`` (Men et al. 2024): the n blocks of lowest Block Influence, any positions.
"""

from __future__ import annotations

import math

from layerprune.errors import LayerpruneError
from layerprune.plan import PruningPlan
from layerprune.scan.residual import Scan

NEEDS_SCAN = {"deeper_layers", "shortgpt"}


def count_to_remove(fraction: float, candidates: int) -> int:
    """round(fraction * candidates), halves rounded up (Python's round() would round 2.5 to 2)."""
    n = math.floor(fraction * candidates + 0.5)
    if n >= candidates:
        raise LayerpruneError(
            f"fraction={fraction} removes {n} of {candidates}: at least one must remain"
        )
    return n


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


def select_blocks(
    method: str, fraction: float, num_blocks: int, scan: Scan | None, metric: str, reduction: str
) -> PruningPlan:
    """Dispatch on ``method``; n = 0 gives an empty plan that says so."""
    n = count_to_remove(fraction, num_blocks)
    if n == 0:
        plan = PruningPlan(method, None, fraction, num_blocks, note="n = 0: the unpruned model")
    elif method == "deeper_layers":
        if metric not in ("angular", "cosine", "l2"):
            raise LayerpruneError(
                f"deeper_layers compares states with angular, cosine or l2, not '{metric}' "
                "(block_influence is pruning_method=shortgpt)"
            )
        plan = deeper_layers(scan, n, metric, reduction)
    elif method == "last_layers":
        plan = last_layers(num_blocks, n)
    elif method == "shortgpt":
        plan = shortgpt(scan, n)
    else:
        raise LayerpruneError(f"unknown block method '{method}'")
    plan.fraction = fraction
    return plan
