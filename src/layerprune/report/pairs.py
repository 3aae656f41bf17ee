"""Each pruned (or healed) job against its model's unpruned job, item by item.

Two jobs of one model are scored on the same items, so their difference is read from the
per-item results (``stats.paired``: a paired bootstrap interval and McNemar's exact test;
``stats.paired_mean`` for the mean over tasks), not from two independent stderrs. A report
reads many such tests at once, so each row also carries Holm's adjusted p over every per-task
test of its model in the table (``tests`` says how many). Jobs stored before per-item
logging have no items and get no row.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from layerprune.results import Results
from layerprune.stats import holm, paired, paired_mean


@functools.cache
def job_items(folder: str) -> dict[str, dict[str, list]]:
    """The per-item results stored in a job folder's ``results.json`` ({} without them)."""
    path = Path(folder) / "results.json"
    return Results.load(path).items if folder and path.exists() else {}


def paired_table(df: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Rows (model, variant, fraction, task, n, diff, low, high, p, p_holm, tests): pruned -
    unpruned on the items both jobs scored, per task of ``metrics`` ("task/metric") and for
    their mean ("mean"). Empty without an unpruned job with items."""
    accuracy = {m.split("/")[0]: m.split("/")[1] for m in metrics if "/" in m}
    removed = df["removed_blocks"] + df["removed_attention"] + df["removed_mlp"] > 0
    healed = df.get("healing", pd.Series("none", index=df.index)).fillna("none") != "none"
    df = df.assign(_base=~removed & ~healed)
    rows = []
    for model, group in df.groupby("model", sort=False):
        base = next((i for p in group[group["_base"]].get("path", []) if (i := job_items(p))), {})
        if not base:
            continue
        tests = []
        for _, job in group[~group["_base"]].iterrows():
            items = job_items(job.get("path", ""))
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
