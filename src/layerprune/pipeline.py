"""One job, top to bottom: load -> select -> prune -> heal -> evaluate -> speed -> record.

This is the only module (besides ``cli``) that knows the config tree: ``stages`` builds each
stage from its config node (plain values and plug-ins), ``run`` passes one ``JobState`` through
them and writes ``results.json`` from it. Healing trains on the calibration source's
``healing`` split, disjoint from every text that is evaluated.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import torch

from layerprune.config import Config
from layerprune.data.text import Text
from layerprune.job import JobState
from layerprune.results import Results
from layerprune.stages import Evaluate, Heal, Load, Prune, Select, Speed, Stage

log = logging.getLogger(__name__)


def stages(cfg: Config) -> list[Stage]:
    """The job's stages, in order, each built from its part of the config."""
    healer = cfg.healing
    return [
        Load(),
        Select(cfg.pruning_method, cfg.metric, cfg.calibration, cfg.model.name),
        Prune(save=cfg.save_checkpoint or healer.wants_checkpoint()),
        Heal(healer, Text(cfg.calibration.source, cfg.calibration.hub)),
        Evaluate(cfg.benchmark, cfg.scorer),
        Speed(cfg.speed),
    ]


def run(cfg: Config, resolved: dict[str, Any], out_dir: Path) -> Results:
    """Run one job and write ``out_dir/results.json``; return its ``Results``."""
    from layerprune.models.load import load_model

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    job = JobState(out_dir, cfg.seed, cfg.fraction, partial(load_model, cfg.model))
    for stage in stages(cfg):
        with job.timed(stage.name):
            stage.run(job)
    model = {"name": cfg.model.name, "title": cfg.model.title or cfg.model.name}
    results = Results.from_job(job, resolved, model)
    results.write(out_dir / "results.json")
    return results
