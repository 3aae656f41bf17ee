"""One pandas row per job, from ``results.json`` files: the table every figure is drawn from."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pandas as pd

from layerprune.results import Results

KINDS = ("blocks", "attention", "mlp")


def load_results(root: Path) -> pd.DataFrame:
    """Rows of every ``results.json`` under ``root``: model, method, metric, fraction, counts,
    the removed indices (``ids/<kind>``), parameters, metrics (one column per
    ``<task>/<metric>``) and timings. ``root`` may also be an earlier report's
    ``all.parquet``: its rows, so a committed figure can be extended with new jobs without
    rerunning the old ones (rows from before ``ids/`` existed have no maps)."""
    if Path(root).suffix == ".parquet":
        return pd.read_parquet(root).assign(path="")  # no job folder: its figures stay put
    rows = []
    for path in sorted(Path(root).rglob("results.json")):
        rows.append(row(Results.load(path), path.parent))
    return pd.DataFrame(rows)


def row(r: Results, folder: Path | None = None) -> dict:
    """One job's table row (module doc of ``load_results``)."""
    cfg, plan = r.config, r.plan
    healing = (r.healing or {}).get("method") or cfg.get("healing", {}).get("name", "none")
    return {
        "model": cfg["model"]["name"],
        "title": r.model.get("title") or cfg["model"]["name"],
        "experiment": cfg.get("experiment"),
        "method": plan["method"],
        "family": plan.get("family", "block"),
        "metric": plan["metric"],
        "healing": healing,
        "healing_tokens": (r.healing or {}).get("tokens", 0),
        "granularity": plan["scores"].get("granularity") if plan.get("scores") else None,
        "variant": plan["method"] + ("" if healing == "none" else f" + {healing}"),
        "fraction": r.fraction,
        "removed_blocks": len(plan["removed_blocks"]),
        "removed_attention": len(plan["removed_attention"]),
        "removed_mlp": len(plan["removed_mlp"]),
        # which ones, as "3,4,5" (hashable, so rows still deduplicate): the maps
        **{f"ids/{k}": ",".join(map(str, plan[f"removed_{k}"])) for k in KINDS},
        "blocks": plan["num_candidates"],
        "params_after": r.params["after"],
        "params_ratio": r.params["after"] / r.params["before"],
        **r.metrics,
        **{f"speed/{k}": v for k, v in ((r.speed or {}).get("ratios") or {}).items()},
        **{f"ideal/{k}": v for k, v in ((r.speed or {}).get("ideal") or {}).items()},
        **_round_spread(r.speed),
        **_baselines(r),
        **{f"time/{k}": v for k, v in r.timings.items()},
        "job": folder.name if folder else "",  # the run store's id: finds its results.json
        "path": str(folder) if folder else "",
    }


def _round_spread(speed: dict | None) -> dict:
    """``speed/round_spread``: the most two rounds of one timing disagreed, either model (a
    busy machine shows here; ``speed.py``). Absent for speed blocks measured before it."""
    spreads = [
        v
        for model in ("pruned", "unpruned")
        for k, v in ((speed or {}).get(model) or {}).items()
        if k.endswith("_round_spread")
    ]
    return {"speed/round_spread": max(spreads)} if spreads else {}


def _baselines(r: Results) -> dict:
    """Per task with per-item results: the majority-class rate of the evaluated items
    (``<task>/majority``), the share of items on which the model gives its most common answer
    (``<task>/top_share``) and that answer where the share reaches ``CONSTANT_SHARE``
    (``<task>/constant``: it answers a constant, not the question)."""
    from layerprune.stats import CONSTANT_SHARE, majority, top_answer

    out = {}
    for task, items in (r.items or {}).items():
        if items.get("target") and items.get("pred"):
            with contextlib.suppress(ValueError):  # answers not logged as indices
                out[f"{task}/majority"] = majority(items)[0]
            top = top_answer(items)
            out[f"{task}/top_share"] = None if top is None else top[1]
            constant = top is not None and top[1] >= CONSTANT_SHARE
            out[f"{task}/constant"] = str(top[0]) if constant else None
    return out
