"""The FinerCut stage: calibration text -> (cached) greedy order -> ``PruningPlan``.

The order is stored in the scan cache under a hash of the model, the calibration tokens, the
metric and the granularity. A search runs up to ``max(fraction, search_fraction)`` of the
sublayers, so every job of a sweep with fractions up to ``search_fraction`` reuses one search;
a longer cached order serves any shorter request (the order is prefix-consistent).
"""

from __future__ import annotations

import json

from filelock import FileLock

from layerprune import atomic, paths
from layerprune.data.packing import pack
from layerprune.data.text import load_documents
from layerprune.errors import LayerpruneError
from layerprune.methods.blocks import count_to_remove
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


def finercut_order(
    lm: LoadedModel,
    source: str,
    split: str,
    num_sequences: int,
    seq_len: int,
    batch_size: int,
    seed: int,
    metric: str,
    granularity: str,
    evaluator: str,
    count: int,
) -> tuple[list[tuple[Candidate, float]], bool]:
    """The first ``count`` (or more) greedy removals; ``(order, cache_hit)``."""
    docs = load_documents(source, split)
    seqs = pack(lm.tokenizer, docs, seq_len, seed)[:num_sequences]
    if len(seqs) < num_sequences:
        raise LayerpruneError(f"{source}/{split} holds only {len(seqs)} sequences of {seq_len}")
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
