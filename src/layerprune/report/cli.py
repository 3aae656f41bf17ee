"""``layerprune-report ROOT... --out DIR``: results.json files -> tables and paper figures.

Writes ``table.csv`` / ``table.md`` (the main columns and ``mean_retention``), ``all.parquet``
(every column, with ``<metric>/retention``), ``curves[_<model>].png/.pdf`` (metric vs
fraction per variant, lm-eval's stderr as bands, chance line, the unpruned model at fraction
0), ``retention[_<model>].png/.pdf`` (mean retention vs parameters removed),
``ablation.png/.pdf`` (with stderr bars) when the variants share one fraction, and copies of
the jobs' distance heatmaps and removed-sublayer maps into ``figures/``. A variant is what differs
between jobs among method, metric, granularity and healing (``deeper_layers + lora``).
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from layerprune.report import style
from layerprune.report.curves import plot_bars, plot_curves
from layerprune.report.pairs import paired_table
from layerprune.report.table import load_results

DEFAULT_METRICS = [
    "mmlu/acc",
    "boolq/acc",
    "arc_easy/acc",
    "piqa/acc",
    "winogrande/acc",
    "hellaswag/acc_norm",
    "c4/loss",
    "wiki/ppl",
]
VARIANT_KEYS = ["method", "metric", "granularity", "healing"]


def speed_columns(df: pd.DataFrame) -> list[str]:
    """The speed ratios worth a table column: tokens/s, KV-cache and weight bytes, and how far
    the timing rounds disagreed (``round_spread``: above 0.15 the ratios are noisy)."""
    keep = ("_tokens_per_s", "kv_bytes_per_token", "weight_bytes", "round_spread")
    return [c for c in df if c.startswith("speed/") and c.endswith(keep)]


def label_variants(df: pd.DataFrame) -> pd.DataFrame:
    """A ``variant`` column naming what differs between the pruned jobs."""
    pruned = df[df["removed_blocks"] + df["removed_attention"] + df["removed_mlp"] > 0]
    keys = [k for k in VARIANT_KEYS if k in df and pruned[k].astype(str).nunique() > 1]
    keys = keys or ["method"]

    def name(row) -> str:
        parts = [str(row["method"])]
        for k in keys:
            if k != "method" and row[k] not in (None, "none") and row[k] == row[k]:
                parts.append(str(row[k]))
        return " + ".join(parts)

    return df.assign(variant=df.apply(name, axis=1))


LOWER_IS_BETTER = ("/loss", "/ppl", "/word_ppl")


def add_retention(df: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """``<metric>/retention`` = metric / the same model's unpruned, unhealed value (its
    fraction-0 row), and ``mean_retention`` over the accuracy metrics (FinerCut's "keeps 90%
    of average performance"); losses keep their own factor but stay out of the mean."""
    df = df.copy()
    removed = df["removed_blocks"] + df["removed_attention"] + df["removed_mlp"]
    healed = df["healing"].fillna("none") != "none" if "healing" in df else False
    base = df[(removed == 0) & ~healed].groupby("model")[metrics].mean()
    accuracies = []
    for m in metrics:
        col = f"{m}/retention"
        df[col] = df[m] / df["model"].map(base[m]) if m in base else float("nan")
        if not m.endswith(LOWER_IS_BETTER):
            accuracies.append(col)
    df["mean_retention"] = df[accuracies].mean(axis=1) if accuracies else float("nan")
    kept = [m for m in metrics if not m.endswith(LOWER_IS_BETTER) and m in base]
    if kept and all(f"{m}_stderr" in df for m in kept):
        # the job's own stderr over the unpruned value (a model's unpruned score scales all
        # of its points alike, so its uncertainty is left out): the band of retention.png
        ratios = [df[f"{m}_stderr"] / df["model"].map(base[m]) for m in kept]
        df["mean_retention_stderr"] = np.sqrt(sum(r**2 for r in ratios)) / len(kept)
    chance = [f"{m.rsplit('/', 1)[0]}/chance" for m in kept]
    if kept and all(c in df for c in chance):  # the retention of answering at random
        parts = [df[c] / df["model"].map(base[m]) for c, m in zip(chance, kept, strict=True)]
        df["mean_retention/chance"] = sum(parts) / len(kept)
    return df


def write_pairs(df: pd.DataFrame, metrics: list[str], out: Path) -> None:
    """``pairs.md`` / ``pairs.csv``: every pruned job - its unpruned model on the same items
    (``report/pairs.py``), where the jobs stored per-item results."""
    pairs = paired_table(df, metrics)
    if pairs.empty:
        return
    pairs.to_csv(out / "pairs.csv", index=False)
    head = (
        "Pruned - unpruned, item by item on the items both jobs scored: the mean difference, "
        "its paired bootstrap 95% interval [low, high], McNemar's exact p per task (a "
        "bootstrap p for the mean), and Holm's adjusted p over the `tests` per-task tests of "
        "the model in this table.\n\n"
    )
    (out / "pairs.md").write_text(head + pairs.to_markdown(index=False, floatfmt=".4f") + "\n")


def constant_tasks(df: pd.DataFrame) -> pd.Series:
    """Per job, the tasks on which it answers a constant (``<task>/constant``, from its
    per-item results), as "boolq=1, piqa=0" (task=answer); "" where none is flagged."""
    flags = [c for c in df.columns if c.endswith("/constant")]

    def row(r: pd.Series) -> str:
        return ", ".join(f"{c.split('/')[0]}={r[c]}" for c in flags if pd.notna(r[c]))

    return df.apply(row, axis=1) if flags and not df.empty else pd.Series("", index=df.index)


def build_report(
    roots: list[Path],
    out: Path,
    metrics: list[str],
    title: str = "",
    query: str = "",
    x: str = "fraction",
) -> pd.DataFrame:
    """Write the tables and figures into ``out``; return the main table.

    ``query`` filters rows (pandas ``DataFrame.query``, e.g. ``"method != 'shortgpt'"``).
    """
    df = pd.concat([load_results(r) for r in roots], ignore_index=True)
    if query and not df.empty:
        df = df.query(query)
    if df.empty:
        raise SystemExit(f"no results.json under {', '.join(map(str, roots))}")
    same = [c for c in df.columns if c != "path" and not c.startswith("time/")]
    df = label_variants(df.drop_duplicates(subset=same))  # one job reached through two roots
    metrics = [m for m in metrics if m in df]
    df = add_retention(df, metrics)
    df["constant_on"] = constant_tasks(df)
    out.mkdir(parents=True, exist_ok=True)

    cols = [
        "model",
        "variant",
        "method",
        "metric",
        "granularity",
        "healing",
        "fraction",
        "removed_blocks",
        "removed_attention",
        "removed_mlp",
        "params_ratio",
        *metrics,
        "mean_retention",
        "constant_on",
        *speed_columns(df),
    ]
    table = df[[c for c in cols if c in df]].sort_values(["model", "variant", "fraction"])
    table.to_csv(out / "table.csv", index=False)
    df.drop(columns=["path"]).to_parquet(out / "all.parquet", index=False)
    (out / "table.md").write_text(table.to_markdown(index=False, floatfmt=".4f") + "\n")
    write_pairs(df, metrics, out)

    unpruned = df["removed_blocks"] + df["removed_attention"] + df["removed_mlp"] == 0
    for model, group in df.groupby("model"):
        base, pruned = group[unpruned[group.index]], group[~unpruned[group.index]]
        base = base.drop_duplicates(subset=metrics)  # n = 0 of every method is one model
        if pruned.empty or not metrics:  # nothing to draw (e.g. benchmark=none)
            continue
        # the unpruned model starts every variant's curve at fraction 0
        curves = pd.concat([pruned] + [base.assign(variant=v) for v in pruned["variant"].unique()])
        suffix = "" if df["model"].nunique() == 1 else f"_{model}"
        what = style.model_title(
            str(model), str(group["title"].iloc[0]) if "title" in group else ""
        )
        heading = f"{title}: {what}" if title else what
        if pruned["fraction"].nunique() > 1:
            plot_curves(
                curves, metrics, out / f"curves{suffix}.png", by="variant", title=heading, x=x
            )
            if curves["mean_retention"].notna().any():  # the share of accuracy kept
                plot_curves(
                    curves,
                    ["mean_retention"],
                    out / f"retention{suffix}.png",
                    by="variant",
                    title=heading,
                    x="params_removed",
                )
        else:
            plot_bars(pruned, base, metrics, out / f"ablation{suffix}.png", title=heading)
    if any(c.startswith("speed/") for c in df):  # what pruning buys
        from layerprune.report.speed_figures import (
            plot_measured_vs_ideal,
            plot_retention_vs_speedup,
        )

        plot_retention_vs_speedup(df, out / "speed.png")
        plot_measured_vs_ideal(df, out / "speed_vs_ideal.png")
    for png in ("distance_heatmap.png", "removed_sublayers.png", "discrepancy_curve.png"):
        for path in df["path"]:
            if not path:  # a row from an earlier report's parquet
                continue
            src = Path(path) / png
            if src.exists():
                row = df[df["path"] == path].iloc[0]
                name = re.sub(r"[^A-Za-z0-9._+-]", "_", f"{row['variant']}_{row['fraction']}")
                dest = out / "figures" / f"{row['model']}_{name.replace('_+_', '+')}_{png}"
                dest.parent.mkdir(exist_ok=True)
                shutil.copyfile(src, dest)
    return table


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    p = argparse.ArgumentParser(prog="layerprune-report", description=__doc__.split("\n")[0])
    p.add_argument("roots", nargs="+", type=Path, help="folders searched for results.json")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS))
    p.add_argument("--title", default="")
    p.add_argument("--query", default="", help="pandas query to filter rows")
    p.add_argument("--experiment", default="", help="only jobs of this experiment")
    p.add_argument("--x", default="fraction", choices=["fraction", "params_removed"])
    args = p.parse_args(argv)
    query = args.query
    if args.experiment:
        query = " and ".join(q for q in (query, f"experiment == '{args.experiment}'") if q)
    table = build_report(args.roots, args.out, args.metrics.split(","), args.title, query, args.x)
    print(table.to_markdown(index=False, floatfmt=".4f"))


if __name__ == "__main__":
    main()
