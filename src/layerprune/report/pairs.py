"""Each pruned (or healed) job against its model's unpruned job, item by item.

Two jobs of one model are scored on the same items, so their difference is read from the
per-item results (``stats.paired``: a paired bootstrap interval and McNemar's exact test;
``stats.paired_mean`` for the mean over tasks), not from two independent stderrs. A report
reads many such tests at once, so each row also carries Holm's adjusted p over every per-task
test of its model in the table (``tests`` says how many). Jobs stored before per-item
logging have no items and get no row.
"""

from __future__ import annotations

import pandas as pd

from layerprune.results import Results
from layerprune.stats import holm, paired, paired_mean


def _items(path: str) -> dict:
    if not path:
        return {}
    file = f"{path}/results.json"
    try:
        return Results.load(file).items or {}
    except FileNotFoundError:
        return {}


def paired_table(df: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Rows (model, variant, fraction, task, n, diff, low, high, p, p_holm, tests): pruned -
    unpruned on the items both jobs scored, per task of ``metrics`` ("task/metric") and for
    their mean ("mean"). Empty without an unpruned job with items."""
    accuracy = {m.split("/")[0]: m.split("/")[1] for m in metrics if "/" in m}
    removed = df["removed_blocks"] + df["removed_attention"] + df["removed_mlp"]
    healed = df["healing"].fillna("none") != "none" if "healing" in df else removed < 0
    rows = []
    for model, group in df.groupby("model", sort=False):
        bases = group[(removed[group.index] == 0) & ~healed[group.index]]
        base = next((i for p in bases.get("path", []) if (i := _items(p))), {})
        if not base:
            continue
        tests = []
        for _, job in group[(removed[group.index] > 0) | healed[group.index]].iterrows():
            items = _items(job.get("path", ""))
            tasks = {t: m for t, m in accuracy.items() if t in items and t in base}
            if not tasks:
                continue
            head = {"model": model, "variant": job["variant"], "fraction": job["fraction"]}
            for task, metric in tasks.items():
                d = paired(base[task], items[task], metric)
                tests.append(len(rows))
                rows.append(head | {"task": f"{task}/{metric}", "n": d.n, **_numbers(d)})
            d = paired_mean(base, items, tasks)
            rows.append(head | {"task": "mean", "n": d.n, **_numbers(d)})
        for i, p in zip(tests, holm([rows[i]["p"] for i in tests]), strict=True):
            rows[i] |= {"p_holm": p, "tests": len(tests)}
    return pd.DataFrame(rows)


def _numbers(d) -> dict:
    return {"diff": d.diff, "low": d.low, "high": d.high, "p": d.p}
