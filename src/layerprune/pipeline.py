"""One job, top to bottom: load -> scan -> select -> prune -> heal -> evaluate -> record.

This is the only module (besides ``cli``) that knows the config tree; every stage it calls
takes plain values. Stages not implemented yet are absent, not faked: with
``pruning_method=none`` the plan is empty and the model is evaluated as loaded.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from layerprune import atomic
from layerprune.config import Config
from layerprune.errors import LayerpruneError
from layerprune.plan import PruningPlan
from layerprune.versions import versions

log = logging.getLogger(__name__)


@contextmanager
def _timed(timings: dict[str, float], stage: str):
    start = time.perf_counter()
    yield
    timings[f"{stage}_s"] = round(time.perf_counter() - start, 3)


def run(cfg: Config, resolved: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Run one job and write ``out_dir/results.json``; return the results dict."""
    from layerprune.evaluate.suite import evaluate_suite
    from layerprune.models.load import count_parameters, load_model

    if cfg.pruning_method.name != "none":
        raise LayerpruneError(f"pruning_method '{cfg.pruning_method.name}' is not available yet")
    torch.manual_seed(cfg.seed)
    timings: dict[str, float] = {}

    with _timed(timings, "load"):
        lm = load_model(cfg.model)
    num_blocks = len(lm.adapter.blocks(lm.model))
    log.info("loaded %s (%s, %d blocks) on %s", cfg.model.name, lm.identity, num_blocks, lm.device)
    params_before = count_parameters(lm.model)

    plan = PruningPlan(
        method="none",
        metric=None,
        fraction=cfg.fraction,
        num_candidates=num_blocks,
        note="unpruned model" if cfg.fraction == 0 else "pruning_method=none ignores fraction",
    )

    bench = cfg.benchmark
    with _timed(timings, "eval"):
        metrics, eval_timings = evaluate_suite(
            lm.model,
            lm.tokenizer,
            [(t.name, t.num_fewshot, t.limit) for t in bench.tasks],
            bench.perplexity,
            bench.data.value,
            bench.batch_size,
        )
    timings.update(eval_timings)

    results = {
        "config": resolved,
        "fraction": cfg.fraction,
        "plan": plan.to_dict(),
        "params": {"before": params_before, "after": count_parameters(lm.model)},
        "metrics": metrics,
        "timings": timings,
        "checkpoint": None,
        "scan_cache": None,
        "versions": versions(),
        "model_identity": lm.identity,
        "seed": cfg.seed,
    }
    atomic.write_json(out_dir / "results.json", results)
    return results
