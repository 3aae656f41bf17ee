"""One job, top to bottom: load -> scan -> select -> prune -> heal -> evaluate -> record.

This is the only module (besides ``cli``) that knows the config tree; every stage it calls
takes plain values. Healing trains on the calibration source's ``healing`` split, disjoint from every text
that is evaluated.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from layerprune import atomic
from layerprune.config import Config
from layerprune.plan import PruningPlan
from layerprune.timing import timed
from layerprune.versions import versions

log = logging.getLogger(__name__)


def run(cfg: Config, resolved: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Run one job and write ``out_dir/results.json``; return the results dict."""
    from layerprune.evaluate.suite import evaluate_suite
    from layerprune.models.load import count_parameters, load_model
    from layerprune.surgery.blocks import remove_blocks, save_checkpoint
    from layerprune.surgery.sublayers import prune_sublayers, save_sublayer_checkpoint

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    timings: dict[str, float] = {}

    with timed(timings, "load"):
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
    # surgery and checkpoint kind follow from the plan: whole blocks only -> a plain HF folder;
    # any sublayer -> stand-ins + the generated modeling file
    sublayers = bool(plan.removed_attention or plan.removed_mlp)
    with timed(timings, "prune"):
        if sublayers:
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
        with timed(timings, "save"):
            save = save_sublayer_checkpoint if sublayers else save_checkpoint
            checkpoint = str(save(lm.model, lm.tokenizer, plan, out_dir / "checkpoint"))

    healing = None
    model = lm.model
    if h.name != "none":
        with timed(timings, "heal"):
            model, healing = _heal(cfg, resolved, lm, plan, checkpoint, out_dir)

    bench = cfg.benchmark
    identity = _model_identity(cfg, lm, plan) if bench.request_cache else None
    with timed(timings, "eval"):
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
    """The method's choice (after the block scan if it needs one): ``(plan, cache)``, where
    cache says whether the scan or the method's search came from its cache."""
    from layerprune.methods.base import MethodContext

    method = cfg.pruning_method
    ctx = MethodContext(
        lm=lm,
        model_name=cfg.model.name,
        fraction=cfg.fraction,
        num_blocks=num_blocks,
        metric=cfg.metric.name,
        reduction=cfg.metric.reduction.value,
        calibration=cfg.calibration,
        out_dir=out_dir,
        timings=timings,
    )
    if method.needs == "scan" and method.count(cfg.fraction, num_blocks) > 0:
        with timed(timings, "scan"):
            ctx.scan, ctx.cache = _scan(cfg, lm, out_dir)
    with timed(timings, "select"):
        plan = method.plan(ctx)
    plan.fraction = cfg.fraction
    return plan, ctx.cache


def _scan(cfg: Config, lm, out_dir: Path):
    """The cached block scan on the calibration text, and its d(l, n) heatmap."""
    from layerprune.report.heatmap import plot_heatmap
    from layerprune.scan.run import calibrated_scan

    scan, hit = calibrated_scan(lm, cfg.calibration)
    cache = "hit" if hit else "miss"
    log.info("scan cache %s (%d sequences, %d tokens)", cache, scan.num_sequences, scan.num_tokens)
    metric = cfg.metric
    shown = metric.name if metric.name != "block_influence" else "angular"
    reduction = metric.reduction.value
    plot_heatmap(
        scan,
        shown,
        reduction,
        out_dir / "distance_heatmap.png",
        f"{cfg.model.name}: {shown} distance d(l, n), {reduction} token",
    )
    return scan, cache


def _heal(cfg: Config, resolved: dict, lm, plan: PruningPlan, checkpoint, out_dir: Path):
    """The heal stage: packed healing text -> trained model (+ adapter / merged checkpoint)."""
    from layerprune import paths
    from layerprune.data.packing import pack
    from layerprune.data.text import load_documents
    from layerprune.heal import heal

    h = cfg.healing
    docs = load_documents(cfg.calibration.source.value, "healing")  # disjoint from eval text
    data = pack(lm.tokenizer, docs, h.seq_len, cfg.seed)
    # the same job config resumes from the same place, whatever its run folder
    from layerprune.store import job_key

    key = job_key(resolved)
    model, result, saved = heal(
        lm.model,
        lm.tokenizer,
        lm.adapter,
        h,
        data,
        out_dir,
        Path(checkpoint) if checkpoint else None,
        paths.home() / "heal" / key,
        lm.dtype,
        cfg.seed,
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
