"""``layerprune-report ROOT... --out DIR``: results.json files -> table (CSV, Markdown) + curves.

Jobs with ``method == none`` (the unpruned model) start every variant's curve at fraction 0.
A variant is a method plus its healing (``deeper_layers + lora``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from layerprune.report.curves import plot_curves
from layerprune.report.table import load_results

DEFAULT_METRICS = ["arc_easy/acc", "piqa/acc", "winogrande/acc", "c4/loss", "wiki/ppl"]


def build_report(
    roots: list[Path],
    out: Path,
    metrics: list[str],
    title: str = "",
    query: str = "",
    x: str = "fraction",
) -> pd.DataFrame:
    """Write ``table.csv``, ``table.md``, ``all.parquet`` and ``curves.png`` into ``out``.

    ``query`` filters rows (pandas ``DataFrame.query``, e.g. ``"method != 'shortgpt'"``).
    """
    df = pd.concat([load_results(r) for r in roots], ignore_index=True)
    if query and not df.empty:
        df = df.query(query)
    if df.empty:
        raise SystemExit(f"no results.json under {', '.join(map(str, roots))}")
    same = [c for c in df.columns if c != "path" and not c.startswith("time/")]
    df = df.drop_duplicates(subset=same)  # one job reached through two roots
    base = df[df["method"] == "none"]
    pruned = df[df["method"] != "none"]
    curves = df
    if not pruned.empty:
        variants = pruned["variant"].unique()
        curves = pd.concat([pruned] + [base.assign(variant=v) for v in variants])
    metrics = [m for m in metrics if m in df]
    out.mkdir(parents=True, exist_ok=True)
    cols = [
        "model",
        "method",
        "metric",
        "healing",
        "fraction",
        "removed_blocks",
        "removed_attention",
        "removed_mlp",
        "params_ratio",
        *metrics,
    ]
    table = df[[c for c in cols if c in df]].sort_values(["model", "method", "healing", "fraction"])
    table.to_csv(out / "table.csv", index=False)
    df.drop(columns=["path"]).to_parquet(out / "all.parquet", index=False)  # every column
    (out / "table.md").write_text(table.to_markdown(index=False, floatfmt=".4f") + "\n")
    plot_curves(curves, metrics, out / "curves.png", by="variant", title=title, x=x)
    return table


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    p = argparse.ArgumentParser(prog="layerprune-report", description=__doc__.split("\n")[0])
    p.add_argument("roots", nargs="+", type=Path, help="folders searched for results.json")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS))
    p.add_argument("--title", default="")
    p.add_argument("--query", default="", help="pandas query to filter rows")
    p.add_argument("--x", default="fraction", choices=["fraction", "params_removed"])
    args = p.parse_args(argv)
    table = build_report(
        args.roots, args.out, args.metrics.split(","), args.title, args.query, args.x
    )
    print(table.to_markdown(index=False, floatfmt=".4f"))


if __name__ == "__main__":
    main()
