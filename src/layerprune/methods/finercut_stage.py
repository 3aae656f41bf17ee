"""The FinerCut stage: calibration text -> (cached) greedy order -> ``PruningPlan``.

The order is stored in the scan cache under a hash of the model, the calibration tokens, the
metric and the granularity. A search runs up to ``max(fraction, search_fraction)`` of the
sublayers, so every job of a sweep with fractions up to ``search_fraction`` reuses one search;
a longer cached order serves any shorter request (the order is prefix-consistent).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from filelock import FileLock

from layerprune import atomic, paths
from layerprune.data.packing import pack
from layerprune.data.text import load_documents
from layerprune.errors import LayerpruneError
from layerprune.methods.base import MethodContext, PruningMethod, count_to_remove
from layerprune.methods.finercut import (
    Candidate,
    FastEvaluator,
    NaiveEvaluator,
    candidates,
    greedy_order,
)
from layerprune.models.load import LoadedModel
from layerprune.plan import PruningPlan
from layerprune.scan.cache import scan_key

if TYPE_CHECKING:
    from layerprune.config import CalibrationConfig

# bump when the search's arithmetic changes (2: float32 chunked divergences): old orders stop
# matching. Separate from SCAN_VERSION so a FinerCut change leaves block scans cached.
ORDER_VERSION = 2


def calibration_tokens(lm: LoadedModel, c: CalibrationConfig):
    """``[num_sequences, seq_len]`` packed calibration tokens (documents joined with EOS)."""
    source, split = c.source.value, c.split.value
    seqs = pack(lm.tokenizer, load_documents(source, split), c.seq_len, c.seed)[: c.num_sequences]
    if len(seqs) < c.num_sequences:
        raise LayerpruneError(f"{source}/{split} holds only {len(seqs)} sequences of {c.seq_len}")
    return seqs


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


def finercut_order(
    lm: LoadedModel,
    calibration: CalibrationConfig,
    metric: str,
    granularity: str,
    evaluator: str,
    count: int,
) -> tuple[list[tuple[Candidate, float]], bool]:
    """The first ``count`` (or more) greedy removals; ``(order, cache_hit)``."""
    seqs = calibration_tokens(lm, calibration)
    batch_size = calibration.batch_size
    key = scan_key(
        lm.identity,
        str(lm.dtype),
        seqs.tolist(),
        {"finercut": metric, "granularity": granularity, "order_version": ORDER_VERSION},
    )
    path = paths.scan_cache_dir() / f"finercut-{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.exists():
            stored = json.loads(path.read_text())
            if len(stored["order"]) >= count:
                return [(Candidate(k, b), d) for k, b, d in stored["order"]], True
        num_blocks = len(lm.adapter.blocks(lm.model))
        batches = [seqs[i : i + batch_size].to(lm.device) for i in range(0, len(seqs), batch_size)]
        cls = FastEvaluator if evaluator == "fast" else NaiveEvaluator
        ev = cls(lm.model, lm.adapter, batches, metric)
        order = greedy_order(ev, candidates(num_blocks, granularity), count)
        atomic.write_json(
            path,
            {
                "order": [(c.kind, c.block, d) for c, d in order],
                "block_forwards": ev.block_forwards,
                "evaluator": evaluator,
            },
        )
        return order, False


def finercut_plan(
    order: list[tuple[Candidate, float]],
    count: int,
    fraction: float,
    num_blocks: int,
    metric: str,
    granularity: str,
) -> PruningPlan:
    """The first ``count`` removals as a plan: blocks that lost both sublayers are removed
    blocks; the rest are removed attention / MLP sublayers."""
    chosen = order[:count]
    attn = {p[1] for c, _ in chosen for p in c.parts() if p[0] == "attention"}
    mlp = {p[1] for c, _ in chosen for p in c.parts() if p[0] == "mlp"}
    both = attn & mlp
    return PruningPlan(
        method="finercut",
        metric=metric,
        fraction=fraction,
        num_candidates=2 * num_blocks,
        removed_blocks=sorted(both),
        removed_attention=sorted(attn - both),
        removed_mlp=sorted(mlp - both),
        scores={
            "granularity": granularity,
            "order": [[c.kind, c.block, round(d, 8)] for c, d in order],
            "count": count,
        },
    )


@dataclass
class FinerCut(PruningMethod):
    """FinerCut (Zhang et al. 2024): greedy removal of attention / MLP sublayers."""

    name: str = "finercut"
    granularity: str = "sublayer"  # sublayer | attention | mlp | block (the candidate set)
    evaluator: str = "fast"  # fast (cached residuals, skipped sublayers) | naive (reference)
    needs = "search"
    default_metric = ("js", "mean")
    metrics = ("js", "js_code", "kl", "angular", "l2")

    def __post_init__(self) -> None:
        super().__post_init__()
        from layerprune.methods.finercut import GRANULARITIES

        if self.granularity not in GRANULARITIES:
            raise LayerpruneError(f"pruning_method.granularity: one of {GRANULARITIES}")
        if self.evaluator not in ("fast", "naive"):
            raise LayerpruneError("pruning_method.evaluator: fast or naive")

    def count(self, fraction: float, num_blocks: int) -> int:
        return removal_count(fraction, num_blocks, self.granularity)

    def plan(self, ctx: MethodContext) -> PruningPlan:
        """The search (cached, prefix-consistent), the plan and its two figures."""
        from layerprune.report.sublayers import plot_discrepancy_curve, plot_removed_map

        count = self.count(ctx.fraction, ctx.num_blocks)
        search = max(count, self.count(self.search_fraction, ctx.num_blocks))
        with ctx.timed("search"):
            order, hit = finercut_order(
                ctx.lm, ctx.calibration, ctx.metric, self.granularity, self.evaluator, search
            )
        ctx.cache = "hit" if hit else "miss"
        plan = finercut_plan(
            order, count, ctx.fraction, ctx.num_blocks, ctx.metric, self.granularity
        )
        if count == 0:
            plan.note = "n = 0: the unpruned model"
        title = f"{ctx.model_name}: FinerCut ({ctx.metric}), {count} of {2 * ctx.num_blocks}"
        plot_removed_map(plan, ctx.num_blocks, ctx.out_dir / "removed_sublayers.png", title)
        plot_discrepancy_curve(
            plan.scores["order"], ctx.out_dir / "discrepancy_curve.png", ctx.metric, count
        )
        return plan
