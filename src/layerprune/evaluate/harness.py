"""lm-eval benchmarks on the model object in memory (never written to disk to be evaluated).

``data="offline"`` runs the *stock* task definitions with only ``dataset_path`` pointed at the
asset cache's Hub-layout folders (``layerprune.assets.benchmarks``); ``data="hub"`` runs them
as lm-eval ships them. Each task is one ``simple_evaluate`` call, so tasks can have their own
shots and limits and each gets its own timing. The lm-eval model object comes from the scorer
plug-in (``scorers.py``); given a request cache database, answers go through lm-eval's request
cache, one database per model (``request_cache.py``).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from layerprune import paths
from layerprune.atomic import cache_lock
from layerprune.errors import LayerpruneError
from layerprune.evaluate.request_cache import check_database

log = logging.getLogger(__name__)


@dataclass
class TaskResult:
    metrics: dict[str, float]  # "<task>/<metric>" -> value (incl. _stderr, n, chance)
    seconds: float
    requests: int  # loglikelihood requests of the task (one per choice)
    hits: int = 0  # answered by the request cache
    misses: int = 0  # answered by the model
    # every request's (log-likelihood, is_greedy), by subtask, item and choice (benchmarks)
    answers: list[tuple[float, bool]] = field(default_factory=list)
    arguments: list[tuple[str, str]] = field(default_factory=list)  # (context, continuation)
    items: dict[str, list] = field(default_factory=dict)  # per-item columns (``_items``)


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
    from layerprune.assets.verify import content_identity

    content_identity("benchmarks", paths.datasets_dir())  # a changed file: one warning
    write_task_overrides(paths.datasets_dir(), tmp, tasks)
    return TaskManager(include_path=str(tmp))


def task_manager(tasks: list[str], data: str, tmp: Path):
    """lm-eval's TaskManager for ``tasks``: offline (the asset cache; ``tmp`` holds the task
    overrides) or the stock one (``data="hub"``)."""
    if data == "offline":
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        return _offline_task_manager(tasks, tmp)
    from lm_eval.tasks import TaskManager

    return TaskManager()


def _leaves(name: str, groups: dict[str, list[str]]) -> list[str]:
    """The tasks under a (nested) group, e.g. mmlu -> mmlu_stem -> mmlu_anatomy ..."""
    children = groups.get(name)
    return [leaf for c in children for leaf in _leaves(c, groups)] if children else [name]


def _samples(name: str, out: dict) -> list[dict]:
    """Logged samples of every task under ``name``."""
    leaves = _leaves(name, out.get("group_subtasks", {}))
    return [s for t in leaves for s in out.get("samples", {}).get(t, [])]


def _requests(name: str, out: dict) -> list[tuple[tuple[float, bool], tuple[str, str]]]:
    """Each log-likelihood request's answer and (context, continuation), ordered by subtask,
    item and choice."""
    by_task = out.get("samples", {})
    return [
        ((float(resp[0][0]), bool(resp[0][1])), (args[0], args[1]))
        for t in _leaves(name, out.get("group_subtasks", {}))
        for s in sorted(by_task.get(t, []), key=lambda s: s["doc_id"])
        for resp, args in zip(s["resps"], s["arguments"], strict=True)
    ]


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


def _items(name: str, out: dict) -> dict[str, list]:
    """Per-item results of every task under ``name``, as columns: ``doc`` (subtask:doc_id),
    ``target``, ``pred`` (the option of highest log-likelihood), and each per-item metric
    lm-eval logged (``acc``, ``acc_norm``, ...). Paired comparisons read these."""
    cols: dict[str, list] = {"doc": [], "target": [], "pred": []}
    metrics: list[str] = []
    for t in _leaves(name, out.get("group_subtasks", {})):
        for s in sorted(out.get("samples", {}).get(t, []), key=lambda s: s["doc_id"]):
            if not metrics:
                metrics = [m for m in s.get("metrics", []) if isinstance(s.get(m), int | float)]
                cols.update({m: [] for m in metrics})
            lls = [float(r[0]) for r in s.get("filtered_resps", [])]
            cols["doc"].append(f"{t}:{s['doc_id']}")
            target = s.get("target")
            cols["target"].append(target if isinstance(target, int) else str(target))
            cols["pred"].append(max(range(len(lls)), key=lls.__getitem__) if lls else None)
            for m in metrics:
                cols[m].append(float(s[m]))
    return cols


def evaluate_tasks(
    lm, tasks: list[tuple[str, int, int | None]], data: str = "offline", cache: Path | None = None
) -> dict[str, TaskResult]:
    """Run ``(task, num_fewshot, limit)`` triples with the lm-eval model ``lm`` (a
    ``Scorer.lm``); returns per-task metrics, per-item results and wall time. ``cache``: the
    request cache database (``Scorer.cache_prefix``), None for none."""
    from lm_eval import simple_evaluate

    model = lm.model
    was_training = model.training
    model.eval()
    results: dict[str, TaskResult] = {}
    with tempfile.TemporaryDirectory(prefix="layerprune-tasks-") as tmp:
        manager = task_manager([t for t, _, _ in tasks], data, Path(tmp))
        for name, shots, limit in tasks:
            log.info("evaluating %s (%d-shot, limit %s, %s)", name, shots, limit, type(lm).__name__)
            start, before = time.perf_counter(), lm.model_requests
            # one writer per database: parallel jobs evaluating the same model take turns
            with cache_lock(cache) if cache else nullcontext():
                if cache:
                    check_database(cache)
                out = simple_evaluate(
                    model=lm,
                    tasks=[name],
                    num_fewshot=shots,
                    limit=limit,
                    task_manager=manager,
                    log_samples=True,
                    bootstrap_iters=1000,
                    verbosity="WARNING",
                    use_cache=str(cache) if cache else None,
                )
            seconds = time.perf_counter() - start
            requests = sum(len(s["arguments"]) for s in _samples(name, out))
            misses = lm.model_requests - before
            answered = _requests(name, out)
            results[name] = TaskResult(
                _flatten(name, out),
                seconds,
                requests,
                requests - misses,
                misses,
                [a for a, _ in answered],
                [r for _, r in answered],
                _items(name, out),
            )
            log.info(
                "%s: %s (%.0f s; requests: %d from the cache, %d scored)",
                name,
                results[name].metrics,
                seconds,
                requests - misses,
                misses,
            )
    model.train(was_training)
    return results
