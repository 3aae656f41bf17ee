"""Chance and majority-class rates of a benchmark's evaluated items, without a model.

A job that logged per-item results has its items' targets (``report/table._baselines``); jobs
that did not (``results.json`` v1) still need the majority rate to tell a model that answers a
constant from one that answers the question (BoolQ's first 200 items: 63.5% "yes" where chance
is 50%). The items and their targets depend only on the task, its shots and its limit, so lm-eval
itself selects them: ``simple_evaluate`` with ``ConstantLM``, which gives every choice the same
log-likelihood, logs each item's target exactly as a real run does, in no time and with no
weights. The majority rate then comes from ``stats.majority``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from lm_eval.api.model import LM

from layerprune.errors import LayerpruneError
from layerprune.evaluate.harness import _flatten, _items, task_manager
from layerprune.stats import majority

ONLY_MULTIPLE_CHOICE = "task baselines (chance, majority) exist for multiple-choice tasks only"


class ConstantLM(LM):
    """Every continuation log-likelihood 0 (not greedy): lm-eval picks the first choice."""

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return [(0.0, False) for _ in requests]

    # a majority-class rate exists only for multiple-choice tasks: anything else is refused
    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        raise LayerpruneError(ONLY_MULTIPLE_CHOICE)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        raise LayerpruneError(ONLY_MULTIPLE_CHOICE)


def task_baselines(
    tasks: list[tuple[str, int, int | None]], data: str = "offline"
) -> dict[str, dict[str, float]]:
    """Per ``(task, num_fewshot, limit)``: ``{"chance", "majority", "n"}`` on the items a run
    with these settings evaluates (the same selection and targets: lm-eval's)."""
    from lm_eval import simple_evaluate

    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="layerprune-tasks-") as tmp:
        manager = task_manager([t for t, _, _ in tasks], data, Path(tmp))
        for name, shots, limit in tasks:
            result = simple_evaluate(
                model=ConstantLM(),
                tasks=[name],
                num_fewshot=shots,
                limit=limit,
                task_manager=manager,
                log_samples=True,
                bootstrap_iters=0,
                verbosity="ERROR",
            )
            items = _items(name, result)
            metrics = _flatten(name, result)
            out[name] = {
                "chance": metrics.get(f"{name}/chance", float("nan")),
                "majority": majority(items)[0],
                "n": float(len(items["target"])),
            }
    return out
