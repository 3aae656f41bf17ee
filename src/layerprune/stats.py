"""Statistics for verdicts: two models scored on the *same* items are compared item by item.

- ``paired``: the mean per-item difference of a metric (accuracy: 1/0 per item), with a paired
  bootstrap interval (items resampled together for both models) and, for 0/1 metrics, the exact
  McNemar test on the discordant items;
- ``paired_mean``: the same for the mean over tasks (each task's items resampled within it);
- ``holm``: Holm's step-down adjustment when a verdict rests on several tests;
- ``baselines``: chance (mean 1 / #choices) and the majority-class rate of the evaluated items,
  and whether a model's predictions are one constant answer.

Per-item results come from ``results.json``'s ``items`` (``evaluate/harness._items``): per task,
columns ``doc``, ``target``, ``pred`` and each per-item metric.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

BOOT = 10_000  # bootstrap resamples
LEVEL = 0.95


@dataclass(frozen=True)
class Paired:
    """B - A on the same items."""

    diff: float  # mean per-item difference
    low: float  # bootstrap interval
    high: float
    n: int  # items both were scored on
    p: float | None  # McNemar's exact two-sided p (0/1 metrics), else bootstrap two-sided p
    b_only: int = 0  # items right under B only (McNemar's discordant counts)
    a_only: int = 0

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        p = f", p {self.p:.2g}" if self.p is not None else ""
        return f"{self.diff:+.3f} [{self.low:+.3f}, {self.high:+.3f}] (n {self.n}{p})"


def aligned(a: dict[str, list], b: dict[str, list], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The metric's per-item values of ``a`` and ``b`` on the items both have, in one order."""
    va = dict(zip(a["doc"], a[metric], strict=True))
    vb = dict(zip(b["doc"], b[metric], strict=True))
    docs = [d for d in a["doc"] if d in vb]
    return np.array([va[d] for d in docs], float), np.array([vb[d] for d in docs], float)


def mcnemar(b_only: int, a_only: int) -> float:
    """Exact two-sided McNemar p: binomial(b_only + a_only, 1/2) at least this unbalanced."""
    from scipy.stats import binomtest

    n = b_only + a_only
    return 1.0 if n == 0 else float(binomtest(b_only, n, 0.5).pvalue)


def paired(a: dict[str, list], b: dict[str, list], metric: str = "acc", seed: int = 0) -> Paired:
    """B - A on the items both were scored on (module doc)."""
    x, y = aligned(a, b, metric)
    d = y - x
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), (BOOT, len(d)))
    boots = d[idx].mean(axis=1)
    low, high = np.quantile(boots, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    binary = set(np.unique(np.concatenate([x, y]))) <= {0.0, 1.0}
    b_only, a_only = int(((y == 1) & (x == 0)).sum()), int(((x == 1) & (y == 0)).sum())
    p = mcnemar(b_only, a_only) if binary else _boot_p(boots, d.mean())
    return Paired(float(d.mean()), float(low), float(high), len(d), p, b_only, a_only)


def paired_mean(
    a: dict[str, dict[str, list]], b: dict[str, dict[str, list]], metrics: dict[str, str], seed=0
) -> Paired:
    """B - A of the mean over tasks (``metrics``: task -> its metric, e.g. acc_norm for
    HellaSwag); each task's items are resampled within the task, the tasks weigh equally."""
    tasks = [t for t in metrics if t in a and t in b]
    diffs = []
    for t in tasks:
        x, y = aligned(a[t], b[t], metrics[t])
        diffs.append(y - x)
    rng = np.random.default_rng(seed)
    boots = np.zeros(BOOT)
    for d in diffs:
        boots += d[rng.integers(0, len(d), (BOOT, len(d)))].mean(axis=1)
    boots /= len(diffs)
    mean = float(np.mean([d.mean() for d in diffs]))
    low, high = np.quantile(boots, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    n = int(sum(len(d) for d in diffs))
    return Paired(mean, float(low), float(high), n, _boot_p(boots, mean))


def _boot_p(boots: np.ndarray, observed: float) -> float:
    """Two-sided bootstrap p of a zero difference: the share of resamples, centred at zero, at
    least as far from it as the observed difference (at least 1 / BOOT)."""
    centred = boots - boots.mean()
    return float(max(np.mean(np.abs(centred) >= abs(observed)), 1 / len(boots)))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    out, running = [0.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        out[i] = running
    return out


@dataclass(frozen=True)
class Baselines:
    chance: float  # mean 1 / #choices (from lm-eval's metrics: the task's "/chance")
    majority: float  # share of the most common target among the evaluated items
    majority_answer: object


def answer_indices(items: dict[str, list]) -> list:
    """The index of each item's right answer. lm-eval logs an index for most tasks, but for
    tasks scored by context (WinoGrande: the choices are the sentence's two contexts) the
    target is the shared continuation's text; with two choices the index follows from the
    prediction and its correctness."""
    targets = items["target"]
    if all(isinstance(t, int) for t in targets):
        return list(targets)
    preds, acc = items.get("pred") or [], items.get("acc") or []
    if len(preds) == len(acc) == len(targets) and set(preds) <= {0, 1}:
        return [p if a else 1 - p for p, a in zip(preds, acc, strict=True)]
    raise ValueError("targets are not answer indices and the task has more than two choices")


def majority(items: dict[str, list]) -> tuple[float, object]:
    """The majority-class rate of the evaluated items and that answer."""
    counts = Counter(answer_indices(items))
    answer, count = counts.most_common(1)[0]
    return count / len(items["target"]), answer


def top_answer(items: dict[str, list]) -> tuple[object, float] | None:
    """The answer a model gives most often and the share of items it gives it on (None: no
    predictions logged)."""
    preds = [p for p in items["pred"] if p is not None]
    if not preds:
        return None
    answer, count = Counter(preds).most_common(1)[0]
    return answer, count / len(preds)


# A model that gives one answer on 95% of a task's items is answering a constant, not the
# question: on BoolQ's 200 items SmolLM2-135M-Instruct says "no" on 97% and scores 0.385 (the
# share of "no" targets), a pruned copy says "yes" on 98.5% and "keeps" 0.650 (issue #31).
CONSTANT_SHARE = 0.95


def constant_answer(items: dict[str, list], share: float = CONSTANT_SHARE) -> object | None:
    """The answer a model gives on at least ``share`` of the items (1.0: on every item), or
    None: a model that (nearly) always answers the same is answering a constant, not the
    question."""
    top = top_answer(items)
    return top[0] if top is not None and top[1] >= share else None
