"""Checks a job's config needs beyond its types, run before any model is loaded (single runs:
in the CLI's up-front check; sweeps: at the start of each job): every task exists (offline:
the asset cache mirrors it; hub: lm-eval knows its name), and the fraction leaves a block.
The model's block count comes from its config.json (no weights are read)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from layerprune import atomic, paths
from layerprune.config import BenchmarkConfig, Config, DataSource, ModelConfig, ModelSource
from layerprune.errors import LayerpruneError

log = logging.getLogger(__name__)


def preflight(cfg: Config) -> None:
    """Raise ``LayerpruneError`` (one line) for an unknown task or a fraction removing all."""
    check_tasks(cfg.benchmark)
    blocks = num_blocks(cfg.model)
    if blocks is not None:
        cfg.pruning_method.count(cfg.fraction, blocks)  # raises if nothing would remain


def check_tasks(bench: BenchmarkConfig) -> None:
    names = [t.name for t in bench.tasks]
    if bench.data == DataSource.offline:
        from layerprune.assets.benchmarks import BENCHMARKS

        unknown = [n for n in names if n not in BENCHMARKS]
        if unknown:
            raise LayerpruneError(
                f"no offline data for task(s) {unknown}; offline tasks: {sorted(BENCHMARKS)} "
                "(use benchmark.data=hub for others)"
            )
        return
    known = lm_eval_task_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        import difflib

        hints = {n: difflib.get_close_matches(n, known, 1) for n in unknown}
        said = ", ".join(
            f"{n}" + (f" (did you mean {h[0]}?)" if h else "") for n, h in hints.items()
        )
        raise LayerpruneError(f"unknown lm-eval task(s): {said}")


def lm_eval_task_names() -> set[str]:
    """Every task and group name lm-eval knows; its index takes ~10 s to build, so the names
    are kept per lm-eval version under the asset home."""
    from importlib.metadata import version

    path = paths.home() / f"lm_eval_tasks-{version('lm_eval')}.json"
    if path.exists():
        return set(json.loads(path.read_text()))
    from lm_eval.tasks import TaskManager

    names = sorted(TaskManager().all_tasks)
    atomic.write_json(path, names)
    return set(names)


def num_blocks(cfg: ModelConfig) -> int | None:
    """The model's decoder block count from its config alone; None if that needs the Hub and
    the Hub cannot be reached (the check then happens after loading)."""
    if cfg.source == ModelSource.random:
        return cfg.random.num_hidden_layers
    if cfg.source == ModelSource.hub:
        try:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(
                cfg.id, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
            ).to_dict()
        except Exception as e:  # offline without a cached config: checked after loading
            log.debug("no config for %s before loading: %s", cfg.id, e)
            return None
    else:
        folder = paths.models_dir() / cfg.id if cfg.source == ModelSource.asset else Path(cfg.id)
        file = folder.expanduser() / "config.json"
        if not file.exists():
            return None  # the loader says what is missing
        config = json.loads(file.read_text())
    layers = config.get("num_hidden_layers") or config.get("text_config", {}).get(
        "num_hidden_layers"
    )
    return int(layers) if layers else None
