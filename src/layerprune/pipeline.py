"""One job, top to bottom: load -> scan -> select -> prune -> heal -> evaluate -> record.

This is the only module (besides ``cli``) that knows the config tree; every stage it calls
takes plain values. Healing arrives with issue #5 (only ``healing=none`` exists yet).
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
    from layerprune.methods.blocks import NEEDS_SCAN, select_blocks
    from layerprune.models.load import count_parameters, load_model
    from layerprune.surgery.blocks import remove_blocks, save_checkpoint

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    timings: dict[str, float] = {}
    method, metric = cfg.pruning_method.name, cfg.metric

    with _timed(timings, "load"):
        lm = load_model(cfg.model)
    num_blocks = len(lm.adapter.blocks(lm.model))
    log.info("loaded %s (%s, %d blocks) on %s", cfg.model.name, lm.identity, num_blocks, lm.device)
    params_before = count_parameters(lm.model)

    scan, scan_cache = None, None
    if method in NEEDS_SCAN and cfg.fraction > 0:
        from layerprune.report.heatmap import plot_heatmap
        from layerprune.scan.run import calibrated_scan

        c = cfg.calibration
        with _timed(timings, "scan"):
            scan, hit = calibrated_scan(
                lm, c.source.value, c.split.value, c.num_sequences, c.seq_len, c.batch_size, c.seed
            )
        scan_cache = "hit" if hit else "miss"
        log.info(
            "scan cache %s (%d sequences, %d tokens)",
            scan_cache,
            scan.num_sequences,
            scan.num_tokens,
        )
        shown = metric.name if metric.name != "block_influence" else "angular"
        plot_heatmap(
            scan,
            shown,
            metric.reduction.value,
            out_dir / "distance_heatmap.png",
            f"{cfg.model.name}: {shown} distance d(l, n), {metric.reduction.value} token",
        )

    with _timed(timings, "select"):
        if method == "none":
            plan = PruningPlan(
                "none",
                None,
                cfg.fraction,
                num_blocks,
                note="pruning_method=none: the unpruned model",
            )
        else:
            plan = select_blocks(
                method, cfg.fraction, num_blocks, scan, metric.name, metric.reduction.value
            )
    log.info("plan: remove blocks %s %s", plan.removed_blocks, plan.note)

    with _timed(timings, "prune"):
        remove_blocks(lm.model, lm.adapter, plan.removed_blocks)
    checkpoint = None
    if cfg.save_checkpoint:
        with _timed(timings, "save"):
            checkpoint = str(save_checkpoint(lm.model, lm.tokenizer, plan, out_dir / "checkpoint"))

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
        "checkpoint": checkpoint,
        "scan_cache": scan_cache,
        "versions": versions(),
        "model_identity": lm.identity,
        "seed": cfg.seed,
    }
    atomic.write_json(out_dir / "results.json", results)
    return results
