"""One job, top to bottom: load -> scan -> select -> prune -> heal -> evaluate -> record.

This is the only module (besides ``cli``) that knows the config tree; every stage it calls
takes plain values. Healing trains on the calibration source's ``healing`` split, disjoint from every text
that is evaluated.
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
    from layerprune.models.load import count_parameters, load_model
    from layerprune.surgery.blocks import remove_blocks, save_checkpoint
    from layerprune.surgery.sublayers import prune_sublayers, save_sublayer_checkpoint

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    timings: dict[str, float] = {}
    method = cfg.pruning_method.name

    with _timed(timings, "load"):
        lm = load_model(cfg.model)
    num_blocks = len(lm.adapter.blocks(lm.model))
    log.info("loaded %s (%s, %d blocks) on %s", cfg.model.name, lm.identity, num_blocks, lm.device)
    params_before = count_parameters(lm.model)

    plan, scan_cache = _select(cfg, lm, num_blocks, timings, out_dir)
    log.info(
        "plan: blocks %s, attention %s, MLP %s %s",
        plan.removed_blocks,
        plan.removed_attention,
        plan.removed_mlp,
        plan.note,
    )
    with _timed(timings, "prune"):
        if method == "finercut":
            prune_sublayers(
                lm.model,
                lm.adapter,
                plan.removed_attention + plan.removed_blocks,
                plan.removed_mlp + plan.removed_blocks,
            )
        else:
            remove_blocks(lm.model, lm.adapter, plan.removed_blocks)
    params_after = count_parameters(lm.model)  # the pruned model, before any LoRA adapter
    checkpoint = None
    h = cfg.healing
    needs_folder = h.name == "qlora" or (h.name in ("lora", "qlora") and h.merge)
    if cfg.save_checkpoint or needs_folder:
        with _timed(timings, "save"):
            save = save_sublayer_checkpoint if method == "finercut" else save_checkpoint
            checkpoint = str(save(lm.model, lm.tokenizer, plan, out_dir / "checkpoint"))

    healing = None
    model = lm.model
    if h.name != "none":
        with _timed(timings, "heal"):
            model, healing = _heal(cfg, resolved, lm, plan, checkpoint, out_dir)

    bench = cfg.benchmark
    identity = _model_identity(cfg, lm, plan) if bench.request_cache else None
    with _timed(timings, "eval"):
        evaluated = evaluate_suite(
            model,
            lm.tokenizer,
            [(t.name, t.num_fewshot, t.limit) for t in bench.tasks],
            bench.perplexity,
            bench.data.value,
            bench.batch_size,
            bench.scoring.value,
            identity,
        )
    timings.update(evaluated.timings)

    results = {
        "config": resolved,
        "fraction": cfg.fraction,
        "plan": plan.to_dict(),
        "params": {"before": params_before, "after": params_after},
        "metrics": evaluated.metrics,
        "timings": timings,
        "eval_cache": evaluated.eval_cache,
        "checkpoint": checkpoint,
        "healing": healing,
        "scan_cache": scan_cache,
        "versions": versions(),
        "model_identity": lm.identity,
        "seed": cfg.seed,
    }
    atomic.write_json(out_dir / "results.json", results)
    return results


def _model_identity(cfg: Config, lm, plan: PruningPlan) -> dict[str, Any]:
    """What the evaluated model is, for its request cache: the same base weights with the same
    blocks / sublayers removed (and the same healing) score every request the same."""
    healing = None
    if cfg.healing.name != "none":
        from dataclasses import asdict

        healing = {
            **asdict(cfg.healing),
            "text": f"{cfg.calibration.source.value}/healing",
            "seed": cfg.seed,
        }
    return {
        "base": lm.identity,
        "dtype": str(lm.dtype),
        "device": lm.device.type,
        "load_in_4bit": cfg.model.load_in_4bit,
        "removed_blocks": sorted(plan.removed_blocks),
        "removed_attention": sorted(plan.removed_attention),
        "removed_mlp": sorted(plan.removed_mlp),
        "healing": healing,
    }


def _select(cfg: Config, lm, num_blocks: int, timings: dict, out_dir: Path):
    """Scan (or search) and choose what to remove: ``(plan, scan_cache)``."""
    from layerprune.methods.blocks import NEEDS_SCAN, select_blocks

    method, metric = cfg.pruning_method.name, cfg.metric
    if method == "none":
        note = "pruning_method=none: the unpruned model"
        return PruningPlan("none", None, cfg.fraction, num_blocks, note=note), None
    if method == "finercut":
        return _finercut(cfg, lm, num_blocks, timings, out_dir)
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
        reduction = metric.reduction.value
        plot_heatmap(
            scan,
            shown,
            reduction,
            out_dir / "distance_heatmap.png",
            f"{cfg.model.name}: {shown} distance d(l, n), {reduction} token",
        )
    with _timed(timings, "select"):
        plan = select_blocks(
            method, cfg.fraction, num_blocks, scan, metric.name, metric.reduction.value
        )
    return plan, scan_cache


def _finercut(cfg: Config, lm, num_blocks: int, timings: dict, out_dir: Path):
    """The FinerCut search (cached, prefix-consistent) and its plan + figures."""
    from layerprune.methods.finercut_stage import finercut_order, finercut_plan, removal_count
    from layerprune.report.sublayers import plot_discrepancy_curve, plot_removed_map

    pm, c = cfg.pruning_method, cfg.calibration
    count = removal_count(cfg.fraction, num_blocks, pm.granularity)
    search = max(count, removal_count(pm.search_fraction, num_blocks, pm.granularity))
    with _timed(timings, "search"):
        order, hit = finercut_order(
            lm,
            c.source.value,
            c.split.value,
            c.num_sequences,
            c.seq_len,
            c.batch_size,
            c.seed,
            cfg.metric.name,
            pm.granularity,
            pm.evaluator,
            search,
        )
    plan = finercut_plan(order, count, cfg.fraction, num_blocks, cfg.metric.name, pm.granularity)
    if count == 0:
        plan.note = "n = 0: the unpruned model"
    plot_removed_map(
        plan,
        num_blocks,
        out_dir / "removed_sublayers.png",
        f"{cfg.model.name}: FinerCut ({cfg.metric.name}), {count} of {2 * num_blocks}",
    )
    plot_discrepancy_curve(
        plan.scores["order"], out_dir / "discrepancy_curve.png", cfg.metric.name, count
    )
    return plan, "hit" if hit else "miss"


def _heal(cfg: Config, resolved: dict, lm, plan: PruningPlan, checkpoint, out_dir: Path):
    """The heal stage: packed healing text -> trained model (+ adapter / merged checkpoint)."""
    from layerprune import paths
    from layerprune.data.packing import pack
    from layerprune.data.text import load_documents
    from layerprune.heal import HealSettings, heal

    h = cfg.healing
    docs = load_documents(cfg.calibration.source.value, "healing")  # disjoint from eval text
    data = pack(lm.tokenizer, docs, h.seq_len, cfg.seed)
    settings = HealSettings(
        method=h.name,
        steps=h.steps,
        batch_size=h.batch_size,
        grad_accum=h.grad_accum,
        lr=h.lr,
        warmup_steps=h.warmup_steps,
        weight_decay=h.weight_decay,
        max_grad_norm=h.max_grad_norm,
        lora_rank=h.lora_rank,
        lora_alpha=h.lora_alpha,
        lora_dropout=h.lora_dropout,
        lora_targets=list(h.lora_targets),
        partial_blocks=h.partial_blocks,
        checkpoint_every=h.checkpoint_every,
        seed=cfg.seed,
    )
    # the same job config resumes from the same place, whatever its run folder
    from layerprune.store import job_key

    key = job_key(resolved)
    model, result, saved = heal(
        lm.model,
        lm.tokenizer,
        lm.adapter,
        settings,
        data,
        out_dir,
        Path(checkpoint) if checkpoint else None,
        paths.home() / "heal" / key,
        h.merge,
        lm.dtype,
    )
    lm.model = model
    log.info(
        "healed: loss %.4f -> %.4f in %d steps (%d tokens)",
        result.first_loss,
        result.last_loss,
        result.steps,
        result.tokens,
    )
    return model, {**result.to_dict(), **saved, "text": f"{cfg.calibration.source.value}/healing"}
