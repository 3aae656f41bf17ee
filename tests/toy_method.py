"""A pruning method defined outside ``src/``: the plug-in test's toy (every other block from
the second, as many as the fraction asks)."""

from __future__ import annotations

from dataclasses import dataclass

from layerprune.methods.base import MethodContext, PruningMethod
from layerprune.plan import PruningPlan


@dataclass
class EveryOther(PruningMethod):
    name: str = "every_other"
    offset: int = 1  # first block removed

    def plan(self, ctx: MethodContext) -> PruningPlan:
        n = self.count(ctx.fraction, ctx.num_blocks)
        blocks = list(range(self.offset, ctx.num_blocks, 2))[:n]
        return PruningPlan(self.name, None, ctx.fraction, ctx.num_blocks, removed_blocks=blocks)
