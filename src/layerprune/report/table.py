"""One pandas row per job, from ``results.json`` files: the table every figure is drawn from."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

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
        r = json.loads(path.read_text())
        cfg, plan = r["config"], r["plan"]
        rows.append(
            {
                "model": cfg["model"]["name"],
                "experiment": cfg.get("experiment"),
                "method": plan["method"],
                "metric": plan["metric"],
                "healing": cfg["healing"]["name"],
                "granularity": plan["scores"].get("granularity") if plan.get("scores") else None,
                "variant": plan["method"]
                + ("" if cfg["healing"]["name"] == "none" else f" + {cfg['healing']['name']}"),
                "fraction": r["fraction"],
                "removed_blocks": len(plan["removed_blocks"]),
                "removed_attention": len(plan["removed_attention"]),
                "removed_mlp": len(plan["removed_mlp"]),
                # which ones, as "3,4,5" (hashable, so rows still deduplicate): the maps
                **{f"ids/{k}": ",".join(map(str, plan[f"removed_{k}"])) for k in KINDS},
                "blocks": plan["num_candidates"],
                "params_after": r["params"]["after"],
                "params_ratio": r["params"]["after"] / r["params"]["before"],
                **r["metrics"],
                **{f"time/{k}": v for k, v in r["timings"].items()},
                "path": str(path.parent),
            }
        )
    return pd.DataFrame(rows)
