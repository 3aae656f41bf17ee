"""``layerprune-report ROOT... --out DIR``: results.json files -> table (CSV, Markdown) + curves.

Jobs with ``method == none`` (the unpruned model) start every method's curve at fraction 0.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from layerprune.report.curves import plot_curves
from layerprune.report.table import load_results

DEFAULT_METRICS = ["arc_easy/acc", "piqa/acc", "winogrande/acc", "c4/loss", "wiki/ppl"]


def build_report(roots: list[Path], out: Path, metrics: list[str], title: str = "") -> pd.DataFrame:
    """Write ``table.csv``, ``table.md`` and ``curves.png`` into ``out``; return the table."""
    df = pd.concat([load_results(r) for r in roots], ignore_index=True)
    if df.empty:
        raise SystemExit(f"no results.json under {', '.join(map(str, roots))}")
    base = df[df["method"] == "none"]
    pruned = df[df["method"] != "none"]
    curves = (
        pd.concat(
            [pruned] + [base.assign(method=m) for m in pruned["method"].unique()], ignore_index=True
        )
        if not pruned.empty
        else df
    )
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
    (out / "table.md").write_text(table.to_markdown(index=False, floatfmt=".4f") + "\n")
    plot_curves(curves, metrics, out / "curves.png", by="variant", title=title)
    return table


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="layerprune-report", description=__doc__.split("\n")[0])
    p.add_argument("roots", nargs="+", type=Path, help="folders searched for results.json")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS))
    p.add_argument("--title", default="")
    p.add_argument("--query", default="", help="pandas query to filter rows")
    args = p.parse_args(argv)
    table = build_report(args.roots, args.out, args.metrics.split(","), args.title, args.query)
    print(table.to_markdown(index=False, floatfmt=".4f"))


if __name__ == "__main__":
    main()
