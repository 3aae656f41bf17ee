"""lm-eval benchmarks on the model object in memory (never written to disk to be evaluated).

``data="offline"`` runs the *stock* task definitions with only ``dataset_path`` pointed at the
asset cache's Hub-layout folders (``layerprune.assets.benchmarks``); ``data="hub"`` runs them
as lm-eval ships them. Each task is one ``simple_evaluate`` call, so tasks can have their own
shots and limits and each gets its own timing.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from layerprune import paths
from layerprune.errors import LayerpruneError

log = logging.getLogger(__name__)
CPU_BATCH_SIZE = 16  # fastest of 1/4/8/16/32/64 on 2 CPU cores (benchmarks/eval_throughput.py)


@dataclass
class TaskResult:
    metrics: dict[str, float]  # "<task>/<metric>" -> value (incl. _stderr, n, chance)
    seconds: float
    requests: int  # loglikelihood requests the model answered (one per choice)


def _offline_task_manager(tasks: list[str], tmp: Path):
    """A TaskManager whose stock tasks read the asset cache instead of the Hub."""
    from lm_eval.tasks import TaskManager

    from layerprune.assets.benchmarks import BENCHMARKS, write_task_overrides

    unknown = [t for t in tasks if t not in BENCHMARKS]
    if unknown:
        raise LayerpruneError(
            f"no offline data for task(s) {unknown}; offline tasks: {sorted(BENCHMARKS)} "
            "(use benchmark.data=hub for others)"
        )
    if not (paths.datasets_dir() / "asset.json").exists():
        raise LayerpruneError(
            f"offline benchmarks are not in the asset cache ({paths.datasets_dir()}); "
            "fetch them with `layerprune-assets benchmarks` (or `make assets`)"
        )
    write_task_overrides(paths.datasets_dir(), tmp, tasks)
    return TaskManager(include_path=str(tmp))


def _leaves(name: str, groups: dict[str, list[str]]) -> list[str]:
    """The tasks under a (nested) group, e.g. mmlu -> mmlu_stem -> mmlu_anatomy ..."""
    children = groups.get(name)
    return [leaf for c in children for leaf in _leaves(c, groups)] if children else [name]


def _samples(name: str, out: dict) -> list[dict]:
    """Logged samples of every task under ``name``."""
    leaves = _leaves(name, out.get("group_subtasks", {}))
    return [s for t in leaves for s in out.get("samples", {}).get(t, [])]


def _flatten(name: str, out: dict) -> dict[str, float]:
    """``results[name]`` ("acc,none": v, "acc_stderr,none": s) -> {"name/acc": v, ...}, plus the
    number of items and the chance level (mean of 1/#choices over the evaluated items)."""
    metrics: dict[str, float] = {}
    for key, value in out["results"][name].items():
        metric, _, filt = key.partition(",")
        if filt == "none" and isinstance(value, int | float) and value == value:
            metrics[f"{name}/{metric}"] = float(value)
    subtasks = _leaves(name, out.get("group_subtasks", {}))
    metrics[f"{name}/n"] = float(sum(out["n-samples"][t]["effective"] for t in subtasks))
    samples = _samples(name, out)
    if samples:
        is_mc = out["configs"][subtasks[0]].get("output_type") == "multiple_choice"
        chance = sum(1 / len(s["arguments"]) for s in samples) / len(samples) if is_mc else 0.0
        metrics[f"{name}/chance"] = chance
    return metrics


def evaluate_tasks(
    model: torch.nn.Module,
    tokenizer,
    tasks: list[tuple[str, int, float | None]],
    data: str = "offline",
    batch_size: int = 0,
) -> dict[str, TaskResult]:
    """Run ``(task, num_fewshot, limit)`` triples; returns per-task metrics and wall time.

    ``batch_size=0`` means the measured CPU optimum on CPU and lm-eval's ``auto`` on CUDA.
    """
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    device = next(model.parameters()).device
    if batch_size <= 0:
        batch_size = "auto" if device.type == "cuda" else CPU_BATCH_SIZE
    was_training = model.training
    model.eval()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(device))
    results: dict[str, TaskResult] = {}
    with tempfile.TemporaryDirectory(prefix="layerprune-tasks-") as tmp:
        if data == "offline":
            os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
            manager = _offline_task_manager([t for t, _, _ in tasks], Path(tmp))
        else:
            from lm_eval.tasks import TaskManager

            manager = TaskManager()
        for name, shots, limit in tasks:
            log.info("evaluating %s (%d-shot, limit %s, batch %s)", name, shots, limit, batch_size)
            start = time.perf_counter()
            out = simple_evaluate(
                model=lm,
                tasks=[name],
                num_fewshot=shots,
                limit=limit,
                task_manager=manager,
                log_samples=True,
                bootstrap_iters=1000,
                verbosity="WARNING",
            )
            seconds = time.perf_counter() - start
            requests = sum(len(s["arguments"]) for s in _samples(name, out))
            results[name] = TaskResult(_flatten(name, out), seconds, requests)
            log.info("%s: %s (%.0f s)", name, results[name].metrics, seconds)
    model.train(was_training)
    return results
