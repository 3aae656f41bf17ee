"""FinerCut (Zhang et al. 2024): greedily remove the sublayer whose removal changes the output least.

Candidates are every attention and every MLP sublayer (``granularity`` restricts them to
attention only, MLP only, or whole blocks). Each step scores every remaining candidate by the
discrepancy (``metric``, JS by default) between the original model's output and the output
with the candidate removed *together with* everything removed so far, on the calibration
text, and removes the best one (``methods/search.py``: evaluators, greedy loop, cache).

A search runs up to ``max(fraction, search_fraction)`` of the sublayers, so every job of a
sweep with fractions up to ``search_fraction`` reuses one search; a longer cached order serves
any shorter request (the order is prefix-consistent).
"""

from __future__ import annotations

from dataclasses import dataclass

from layerprune.errors import LayerpruneError
from layerprune.methods.base import MethodContext, PruningMethod, count_to_remove
from layerprune.methods.search import (
    GRANULARITIES,
    Candidate,
    FastEvaluator,
    NaiveEvaluator,
    Search,
    cached_search,
    calibration_batches,
    candidates,
    greedy_order,
)
from layerprune.plan import PruningPlan

# bump when the search's arithmetic changes (2: float32 chunked divergences): old orders stop
# matching. Separate from SCAN_VERSION so a FinerCut change leaves block scans cached.
ORDER_VERSION = 2


def removal_count(fraction: float, num_blocks: int, granularity: str) -> int:
    """Candidates to remove: round(fraction * 2L) sublayers; round(fraction * L) blocks."""
    if granularity == "block":
        return count_to_remove(fraction, num_blocks)
    n = count_to_remove(fraction, 2 * num_blocks)
    if granularity in ("attention", "mlp") and n > num_blocks:
        raise LayerpruneError(
            f"fraction={fraction} asks for {n} sublayers but granularity={granularity} has "
            f"only {num_blocks} candidates"
        )
    return n


def split_removals(chosen: list[Candidate]) -> dict[str, list[int]]:
    """Removed candidates as a plan's lists: blocks that lost both sublayers are removed
    blocks; the rest are removed attention / MLP sublayers."""
    attn = {p[1] for c in chosen for p in c.parts() if p[0] == "attention"}
    mlp = {p[1] for c in chosen for p in c.parts() if p[0] == "mlp"}
    both = attn & mlp
    return {
        "removed_blocks": sorted(both),
        "removed_attention": sorted(attn - both),
        "removed_mlp": sorted(mlp - both),
    }


@dataclass
class FinerCut(PruningMethod):
    """FinerCut (module doc)."""

    name: str = "finercut"
    granularity: str = "sublayer"  # sublayer | attention | mlp | block (the candidate set)
    evaluator: str = "fast"  # fast (cached residuals, skipped sublayers) | naive (reference)
    needs = "search"
    family = "sublayer"
    default_metric = ("js", "mean")
    metrics = ("js", "js_code", "kl", "angular", "l2")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.granularity not in GRANULARITIES:
            raise LayerpruneError(f"pruning_method.granularity: one of {GRANULARITIES}")
        if self.evaluator not in ("fast", "naive"):
            raise LayerpruneError("pruning_method.evaluator: fast or naive")

    def count(self, fraction: float, num_blocks: int) -> int:
        return removal_count(fraction, num_blocks, self.granularity)

    def plan(self, ctx: MethodContext) -> PruningPlan:
        """The search (cached, prefix-consistent), the plan and its two figures."""
        from layerprune.report.sublayers import plot_discrepancy_curve, plot_removed_map

        metric, count = ctx.metric.name, ctx.count
        depth = max(count, self.count(self.search_fraction, ctx.num_blocks))
        with ctx.timed("search"):
            stored, hit = cached_search(ctx.lm, ctx.calibration, self._search(ctx, depth), depth)
        ctx.cache = "hit" if hit else "miss"
        order = [(Candidate(k, b), d) for k, b, d in stored["order"]]
        plan = self.make_plan(
            ctx,
            metric=metric,
            num_candidates=2 * ctx.num_blocks,
            scores={
                "granularity": self.granularity,
                "order": [[c.kind, c.block, round(d, 8)] for c, d in order],
                "count": count,
            },
            **split_removals([c for c, _ in order[:count]]),
        )
        title = f"{ctx.title}: FinerCut ({metric}), {count} of {2 * ctx.num_blocks}"
        plot_removed_map(plan, ctx.num_blocks, ctx.out_dir / "removed_sublayers.png", title)
        plot_discrepancy_curve(
            plan.scores["order"], ctx.out_dir / "discrepancy_curve.png", metric, count
        )
        return plan

    def search_evaluator(self, model, adapter, batches: list, metric: str):
        cls = FastEvaluator if self.evaluator == "fast" else NaiveEvaluator
        return cls(model, adapter, batches, metric)

    def _search(self, ctx: MethodContext, depth: int) -> Search:
        metric = ctx.metric.name

        def run() -> dict:
            batches = calibration_batches(ctx.lm, ctx.calibration)
            ev = self.search_evaluator(ctx.lm.model, ctx.lm.adapter, batches, metric)
            order = greedy_order(ev, candidates(ctx.num_blocks, self.granularity), depth)
            return {
                "order": [(c.kind, c.block, d) for c, d in order],
                "block_forwards": ev.block_forwards,
                "evaluator": self.evaluator,
            }

        key = {"finercut": metric, "granularity": self.granularity, "order_version": ORDER_VERSION}
        return Search("finercut", key, run)
