"""The perplexity block criterion: remove the blocks whose removal raises calibration
perplexity least.

- ``mode=one_shot`` (Kim et al. 2024, *Shortened LLaMA*): every block is scored once, by the
  calibration loss of the model without it; the n lowest go.
- ``mode=iterative`` (Song et al. 2024, *SLEB*): remove the best block, re-score the rest
  without it, repeat. The order is prefix-consistent (its first n entries are the plan for
  n), so it is searched once to ``search_fraction`` and cached, as FinerCut's.

Both score with FinerCut's fast evaluator at block granularity (a candidate at block i runs
only blocks i.. from the cached residual stream entering block i); the score is the mean
next-token loss on the calibration tokens, ln(perplexity). Cost is counted in block forwards.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from layerprune.errors import LayerpruneError
from layerprune.methods.base import MethodContext, PruningMethod
from layerprune.methods.search import (
    HEAD_ROWS,
    FastEvaluator,
    Search,
    cached_search,
    calibration_batches,
    candidates,
    greedy_order,
)
from layerprune.plan import PruningPlan

log = logging.getLogger(__name__)
ORDER_VERSION = 1  # bump when the scoring arithmetic changes


class PerplexityEvaluator(FastEvaluator):
    """FastEvaluator whose score is the calibration loss itself (no reference outputs)."""

    def __init__(self, model, adapter, batches):
        super().__init__(model, adapter, batches, "perplexity")

    def _references(self) -> list[torch.Tensor]:
        return []  # the targets are the next tokens

    @torch.no_grad()
    def _score(self, finals: list[torch.Tensor]) -> float:
        """Mean next-token negative log-likelihood over every calibration position."""
        total, count = 0.0, 0
        for ids, final in zip(self.batches, finals, strict=True):
            for loss in next_token_losses(self._head, final, ids):
                total += loss
            count += ids[:, 1:].numel()
        return float(total) / count


def next_token_losses(head, final: torch.Tensor, ids: torch.Tensor) -> Iterator[torch.Tensor]:
    """Summed next-token cross-entropy, per chunk of ``HEAD_ROWS`` positions, of final hidden
    states ``[B, T, H]`` through ``head`` (to logits) against tokens ``ids`` ``[B, T]``: 0-dim,
    on the logits' device (a split model's last GPU; the tokens are moved there from the
    first)."""
    hidden = final[:, :-1].reshape(-1, final.shape[-1])
    targets = ids[:, 1:].reshape(-1)
    for s in range(0, targets.numel(), HEAD_ROWS):
        logits = head(hidden[s : s + HEAD_ROWS]).float()
        chunk = targets[s : s + HEAD_ROWS].to(logits.device)
        yield F.cross_entropy(logits, chunk, reduction="sum")


def perplexity_search(lm, calibration, mode: str, count: int) -> Search:
    """The search of ``mode``: one_shot ranks every block by its loss alone; iterative removes
    the best block, re-scores the rest, to ``count`` removals."""

    def run() -> dict:
        num_blocks = len(lm.adapter.blocks(lm.model))
        ev = PerplexityEvaluator(lm.model, lm.adapter, calibration_batches(lm, calibration))
        cands = candidates(num_blocks, "block")
        if mode == "one_shot":
            log.info("ppl one_shot: scoring %d blocks", len(cands))
            scores = ev.scores(cands)
            ranked = sorted(range(len(cands)), key=lambda k: (scores[k], k))
            order = [(cands[k].block, scores[k]) for k in ranked]
        else:
            steps = greedy_order(ev, cands, count, desc="ppl iterative")
            order = [(c.block, d) for c, d in steps]
        return {"order": order, "block_forwards": ev.block_forwards}

    return Search("ppl", {"ppl": mode, "order_version": ORDER_VERSION}, run)


def perplexity_order(lm, calibration, mode: str, count: int) -> tuple[list, float, bool]:
    """``([(block, loss), ...], block_forwards, cache_hit)``: one_shot ranks every block;
    iterative holds at least ``count`` greedy removals."""
    need = None if mode == "one_shot" else count
    stored, hit = cached_search(
        lm, calibration, perplexity_search(lm, calibration, mode, count), need
    )
    return [tuple(x) for x in stored["order"]], stored["block_forwards"], hit


@dataclass
class Perplexity(PruningMethod):
    """Blocks ranked by calibration perplexity without them (module doc)."""

    name: str = "ppl"
    mode: str = "one_shot"  # one_shot (Shortened LLaMA) | iterative (SLEB)
    needs = "search"
    default_metric = ("perplexity", "mean")
    metrics = ("perplexity",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in ("one_shot", "iterative"):
            raise LayerpruneError(f"pruning_method.mode={self.mode!r}: one_shot or iterative")

    def search_evaluator(self, model, adapter, batches: list, metric: str):
        return PerplexityEvaluator(model, adapter, batches)

    def plan(self, ctx: MethodContext) -> PruningPlan:
        n = ctx.count
        depth = max(n, self.count(self.search_fraction, ctx.num_blocks))
        with ctx.timed("search"):
            order, forwards, hit = perplexity_order(ctx.lm, ctx.calibration, self.mode, depth)
        ctx.cache = "hit" if hit else "miss"
        return self.make_plan(
            ctx,
            metric=f"perplexity/{self.mode}",
            removed_blocks=sorted(block for block, _ in order[:n]),
            scores={
                "mode": self.mode,
                # one_shot: each block's loss alone; iterative: the loss after each removal
                "order": [
                    [block, round(loss, 6), round(math.exp(loss), 4)] for block, loss in order
                ],
                "block_forwards": forwards,
                "n": n,
            },
        )
