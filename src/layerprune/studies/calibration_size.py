"""How much calibration text does a selection need? (issue #14, item 5)

For one model: scans on 4, 8, ... documents of the calibration split (several seeded draws
each) and on all of them; for each criterion, the share of block counts n = 1 .. L-1 whose
choice equals the all-documents choice:

- ``deeper_layers angular/last``: l*(n) = argmin_l d(x(l), x(l+n)), Gromov's last token;
- ``deeper_layers cosine/mean``: the same with mean-token cosine distance;
- ``shortgpt``: the set of the n lowest-Block-Influence blocks.

Every scan goes through the scan cache, so a rerun (or a second figure) costs nothing.

    python -m layerprune.studies.calibration_size --model smollm2-135m --out experiments/cross_family
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from layerprune.config import CalibrationConfig, ModelConfig
from layerprune.data.text import load_documents
from layerprune.scan.residual import Scan
from layerprune.scan.run import calibrated_scan

SIZES = (4, 8, 16, 32, 64)
CRITERIA = ("deeper_layers angular/last", "deeper_layers cosine/mean", "shortgpt")


def choices(scan: Scan, criterion: str) -> dict[int, object]:
    """What ``criterion`` removes for every n = 1 .. L-1."""
    out = {}
    for n in range(1, scan.num_blocks):
        if criterion == "shortgpt":
            bi = scan.block_influence
            order = sorted(range(scan.num_blocks), key=lambda i: (float(bi[i]), i))
            out[n] = tuple(sorted(order[:n]))
        else:
            metric, reduction = criterion.split()[1].split("/")
            out[n] = int(scan.curve(metric, reduction, n).argmin())
    return out


def calibration_study(
    lm, source: str = "c4", sizes=SIZES, seeds=(0, 1, 2), seq_len: int = 256, batch_size: int = 8
) -> pd.DataFrame:
    """One row per (documents, seed, criterion): the agreement with all documents."""
    docs = len(load_documents(source, "calibration"))
    sizes = [s for s in sizes if s < docs]

    def scan(num: int, seed: int) -> Scan:
        c = CalibrationConfig(
            source=source, num_sequences=num, seq_len=seq_len, batch_size=batch_size, seed=seed
        )
        return calibrated_scan(lm, c)[0]

    reference = scan(docs, 0)
    want = {c: choices(reference, c) for c in CRITERIA}
    rows = [
        {"documents": docs, "seed": 0, "criterion": c, "agreement": 1.0, "all_documents": docs}
        for c in CRITERIA
    ]
    for num in sizes:
        for seed in seeds:
            s = scan(num, seed)
            for c in CRITERIA:
                got = choices(s, c)
                same = sum(got[n] == want[c][n] for n in got) / len(got)
                rows.append(
                    {
                        "documents": num,
                        "seed": seed,
                        "criterion": c,
                        "agreement": same,
                        "all_documents": docs,
                    }
                )
    return pd.DataFrame(rows)


def plot_agreement(df: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Agreement with all documents vs documents, per criterion: the seeds' mean, min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    draw_agreement(ax, df, title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    fig.savefig(Path(path).with_suffix(".pdf"), metadata={"CreationDate": None})  # reproducible
    plt.close(fig)
    return Path(path)


def draw_agreement(ax, df: pd.DataFrame, title: str = "") -> None:
    """One panel of ``plot_agreement`` (the cross-family figure puts the models side by side)."""
    for criterion, group in df.groupby("criterion"):
        g = group.groupby("documents")["agreement"].agg(["mean", "min", "max"])
        (line,) = ax.plot(g.index, g["mean"], marker="o", label=criterion)
        ax.fill_between(g.index, g["min"], g["max"], color=line.get_color(), alpha=0.15, lw=0)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("calibration documents")
    ax.set_ylabel("share of n with the all-documents choice")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)


def main(argv: list[str] | None = None) -> None:
    from layerprune.models.load import load_model

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="offline asset name")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--source", default="c4")
    args = p.parse_args(argv)
    lm = load_model(ModelConfig(name=args.model, source="asset", id=args.model))
    df = calibration_study(lm, args.source).assign(model=args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out / f"calibration_size_{args.model}.csv", index=False)
    plot_agreement(df, args.out / f"calibration_size_{args.model}.png", args.model)
    print(df.groupby(["criterion", "documents"])["agreement"].mean().unstack().to_string())


if __name__ == "__main__":
    main()
