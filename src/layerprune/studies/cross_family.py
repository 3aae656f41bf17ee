"""Issue #14's report: the model families side by side, and the papers' claims checked on each.

    python -m layerprune.studies.cross_family outputs/cross_family --out experiments/cross_family

Writes what ``layerprune-report`` writes (tables, per-model curves), then, with one panel (or
row of panels) per model: ``accuracy`` (block methods, unhealed: MMLU, BoolQ, the seven
tasks' mean ``mean/acc`` with its stderr, C4 loss; Gromov Fig. 1-3; every task per model in
``curves_<model>``), ``healing`` (the same, healed vs unhealed), ``retention`` (mean
retention vs parameters removed, every variant), ``heatmaps`` (d(l, n), angular, last token, with l*(n)),
``removed_sublayers`` (FinerCut at 1/4, its Fig. 4), ``calibration_size`` (when the
study's CSVs are in ``--out``), and ``claims.md``: each claim of the papers per model, with
the numbers behind its verdict and the rule that gave it.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from layerprune.report.cli import build_report  # noqa: E402
from layerprune.report.curves import plot_curves  # noqa: E402
from layerprune.report.heatmap import distance_grid, draw_heatmap  # noqa: E402
from layerprune.report.sublayers import draw_removed_map  # noqa: E402
from layerprune.scan.residual import Scan  # noqa: E402
from layerprune.studies.calibration_size import choices  # noqa: E402

ACCURACIES = [
    "mmlu/acc",
    "boolq/acc",
    "arc_easy/acc",
    "arc_challenge/acc_norm",
    "piqa/acc",
    "winogrande/acc",
    "hellaswag/acc_norm",
]
ZERO_SHOT = ACCURACIES[1:]  # where the collapse is read when MMLU starts at chance
METRICS = [*ACCURACIES, "c4/loss"]
BLOCK_METHODS = ("deeper_layers", "last_layers", "shortgpt")
FIGURES = ("accuracy", "healing", "retention", "heatmaps", "removed_sublayers")


def variants(df: pd.DataFrame) -> pd.DataFrame:
    """``variant`` = method (+ healing): each method here has one metric, so no more is needed;
    the unpruned model is the fraction-0 point of every variant of its model."""
    healed = df["healing"].fillna("none")
    name = df["method"] + np.where(healed != "none", " + " + healed, "")
    df = df.assign(variant=name, params_removed=1 - df["params_ratio"])
    removed = df["removed_blocks"] + df["removed_attention"] + df["removed_mlp"]
    base, pruned = df[(removed == 0) & (healed == "none")], df[removed > 0]
    starts = [
        base[base["model"] == m].assign(variant=v)
        for m, v in pruned[["model", "variant"]].drop_duplicates().itertuples(index=False)
    ]
    df = pd.concat([pruned, *starts], ignore_index=True)
    tasks = [t for t in ACCURACIES if t in df]
    if tasks:  # "mean/acc": the seven tasks' mean, drawn with its stderr and chance like a task
        df["mean/acc"], df["mean/acc_stderr"] = mean_accuracy(df, tasks)
        df["mean/chance"] = df[[t.rsplit("/", 1)[0] + "/chance" for t in tasks]].mean(axis=1)
    return df


def mean_accuracy(df: pd.DataFrame, tasks: list[str]) -> tuple[pd.Series, pd.Series]:
    """Mean accuracy over ``tasks`` and its standard error, sqrt(sum se^2) / k (the tasks'
    item sets are independent)."""
    tasks = [t for t in tasks if t in df]
    mean = df[tasks].mean(axis=1)
    se = np.sqrt((df[[f"{t}_stderr" for t in tasks]] ** 2).sum(axis=1)) / len(tasks)
    return mean, se


def above_chance(df: pd.DataFrame, tasks: list[str]) -> tuple[pd.Series, pd.Series]:
    """Mean of (accuracy - chance) over ``tasks``, and its standard error (chance is exact)."""
    tasks = [t for t in tasks if t in df]
    mean, se = mean_accuracy(df, tasks)
    return mean - df[[t.rsplit("/", 1)[0] + "/chance" for t in tasks]].mean(axis=1), se


def _curve(df: pd.DataFrame, model: str, variant: str) -> pd.DataFrame:
    sel = df[(df["model"] == model) & (df["variant"] == variant)]
    return sel.sort_values("fraction").drop_duplicates("fraction")


def num_blocks(df: pd.DataFrame, model: str) -> int:
    """The model's blocks: the candidates of its block-level rows (a FinerCut row's are its
    sublayers, 2L)."""
    rows = df[(df["model"] == model) & df["method"].isin([*BLOCK_METHODS, "none"])]
    return int(rows["blocks"].max())


def ids(value: str) -> list[int]:
    """The removed indices of a table row (``"3,4,5"``, see ``report.table``)."""
    return [int(i) for i in str(value).split(",") if i]


def removed_sublayers(row: pd.Series) -> tuple[list[int], list[int]]:
    """The blocks whose attention, and whose MLP, a row removed; a whole removed block (both
    of its sublayers, which the plan records as a block) counts in both."""
    blocks = ids(row["ids/blocks"])
    return sorted(ids(row["ids/attention"]) + blocks), sorted(ids(row["ids/mlp"]) + blocks)


def _frac(f: float) -> str:
    return f"{f:.3g}"


def _verdict(holds: bool | None, evidence: str) -> str:
    word = {True: "holds", False: "does not hold", None: "cannot tell"}[holds]
    return f"**{word}**: {evidence}"


# --- the claims: each takes one model's rows (and scans) and returns "verdict: numbers" ---


def claim_deeper_most_similar(scans: dict[str, Scan]) -> str:
    """Gromov: the most similar block of n (l*(n)) sits deep in the network. Rule: holds when
    l*(n) lies in the deeper half of its possible starts (l*(n) >= (L - n) / 2) for at least
    2/3 of n = 1 .. L/2 in the all-documents scan, does not hold at most 1/3."""
    parts, share_all = [], None
    for label, scan in scans.items():
        size = scan.num_blocks
        ns = range(1, size // 2 + 1)
        picks = choices(scan, "deeper_layers angular/last")  # l*(n), as the study reads it
        starts = [picks[n] for n in ns]
        deep = sum(s >= (size - n) / 2 for s, n in zip(starts, ns, strict=True))
        parts.append(f"{label}: {deep}/{len(starts)} n deep, l*(1..{size // 2}) = {starts}")
        if label.startswith("all") or share_all is None:  # the verdict: all documents'
            share_all = deep / len(starts)
    if share_all is None:
        return "not run"
    holds = True if share_all >= 2 / 3 else False if share_all <= 1 / 3 else None
    return _verdict(holds, "; ".join(parts))


def claim_collapse(df: pd.DataFrame, model: str) -> str:
    """Gromov: accuracy holds up to a model-dependent fraction, then falls to chance (MMLU:
    Llama-2 45-55%, Mistral 35%, Qwen 20%). Read on deeper_layers (unhealed): MMLU's
    above-chance accuracy, or, when the unpruned MMLU is within 2 stderr of chance, the mean
    above-chance accuracy of the six 0-shot tasks. Plateau = the pruned fractions keeping >= 80%
    of it; collapse = the first fraction within 2 stderr of chance. Rule: holds when there is a
    plateau and a later collapse (the number is the collapse fraction); does not hold when
    below 80% already at the first pruned fraction; cannot tell without a collapse."""
    c = _curve(df, model, "deeper_layers")
    if len(c) < 2 or "mmlu/acc" not in c:
        return "not run"
    mmlu = c["mmlu/acc"] - c["mmlu/chance"]
    mmlu_se = c["mmlu/acc_stderr"]
    head = (
        f"unpruned MMLU {c['mmlu/acc'].iloc[0]:.3f} +- {mmlu_se.iloc[0]:.3f} "
        f"(chance {c['mmlu/chance'].iloc[0]:.2f})"
    )
    if mmlu.iloc[0] > 2 * mmlu_se.iloc[0]:
        gap, se, read = mmlu, mmlu_se, "MMLU"
    else:
        gap, se = above_chance(c, ZERO_SHOT)
        read, head = "the 0-shot tasks", head + ", at chance: read from the 0-shot tasks"
    fractions = list(c["fraction"])
    at_chance = [f for f, g, s in zip(fractions, gap, se, strict=True) if f > 0 and g <= 2 * s]
    kept = (gap / gap.iloc[0]).round(2).tolist()
    curve = ", ".join(f"{_frac(f)}: {k:.2f}" for f, k in zip(fractions, kept, strict=True))
    evidence = f"{head}; share of above-chance accuracy kept ({read}) {curve}"
    if gap.iloc[0] <= 2 * se.iloc[0]:
        return _verdict(None, evidence + "; unpruned already at chance")
    if kept[1] < 0.8:
        return _verdict(False, evidence + f"; no plateau ({kept[1]:.2f} at {_frac(fractions[1])})")
    plateau = max(f for f, k in zip(fractions, kept, strict=True) if f > 0 and k >= 0.8)
    evidence += f"; plateau up to {_frac(plateau)}"
    if not at_chance:
        return _verdict(None, evidence + f", no collapse up to {_frac(max(fractions))}")
    return _verdict(True, evidence + f", collapse (at chance) from {_frac(at_chance[0])}")


def _gap(
    df: pd.DataFrame, model: str, a: str, b: str, f: float
) -> tuple[float, float, bool] | None:
    """Mean accuracy of variant a - variant b at fraction f, its stderr, and whether the two
    removed the same blocks (then they are one model and the gap says nothing)."""
    ra, rb = _curve(df, model, a), _curve(df, model, b)
    ra, rb = ra[np.isclose(ra["fraction"], f)], rb[np.isclose(rb["fraction"], f)]
    if ra.empty or rb.empty:
        return None
    (ma, sa), (mb, sb) = (tuple(x.iloc[0] for x in mean_accuracy(r, ACCURACIES)) for r in (ra, rb))
    same = "ids/blocks" in ra and ra["ids/blocks"].iloc[0] == rb["ids/blocks"].iloc[0]
    return ma - mb, math.hypot(sa, sb), bool(same)


def _gap_text(gap: tuple[float, float, bool]) -> str:
    d, s, same = gap
    return f"{d:+.3f} +- {s:.3f}" + (" (same blocks)" if same else "")


def claim_similarity_beats_heuristic(df: pd.DataFrame, model: str) -> str:
    """Gromov Fig. 5: unhealed, the similarity method is much better than dropping the last
    blocks. Mean accuracy over the seven tasks, deeper_layers - last_layers, at each fraction
    where the two removed different blocks (where they removed the same, they are one model).
    Rule: holds when the gap exceeds 2 stderr at most of those fractions, does not hold when it
    is negative beyond 2 stderr at most; cannot tell otherwise or without such a fraction."""
    fractions = sorted(f for f in _curve(df, model, "deeper_layers")["fraction"] if f > 0)
    gaps = [(f, g) for f in fractions if (g := _gap(df, model, "deeper_layers", "last_layers", f))]
    if not gaps:
        return "not run"
    ev = "mean accuracy deeper_layers - last_layers: " + ", ".join(
        f"{_frac(f)}: {_gap_text(g)}" for f, g in gaps
    )
    differ = [(d, s) for _, (d, s, same) in gaps if not same]
    if not differ:
        return _verdict(None, ev + "; the two chose the same blocks at every fraction")
    wins = sum(d > 2 * s for d, s in differ)
    losses = sum(d < -2 * s for d, s in differ)
    holds = True if wins > len(differ) / 2 else False if losses > len(differ) / 2 else None
    return _verdict(holds, ev)


def claim_healing_closes_gap(df: pd.DataFrame, model: str) -> str:
    """Gromov: healed, the simple heuristic is about as good as the similarity method. Read at
    the healed fractions where the two methods removed different blocks. Rule: holds when the
    healed gap (deeper_layers + lora - last_layers + lora, mean accuracy) is within 2 stderr at
    every such fraction while an unhealed gap there exceeded 2 stderr; does not hold when a
    healed gap exceeds 2 stderr; cannot tell when there was no gap to close (or no fraction
    where the methods differ)."""
    rows = []
    for f in sorted(f for f in _curve(df, model, "deeper_layers + lora")["fraction"] if f > 0):
        healed = _gap(df, model, "deeper_layers + lora", "last_layers + lora", f)
        unhealed = _gap(df, model, "deeper_layers", "last_layers", f)
        if healed and unhealed:
            rows.append((f, unhealed, healed))
    if not rows:
        return "not run"
    ev = "; ".join(
        f"{_frac(f)}: unhealed {_gap_text(u)}, healed {_gap_text(h)}" for f, u, h in rows
    )
    rows = [(f, u, h) for f, u, h in rows if not u[2]]
    if not rows:
        return _verdict(None, ev + " (the two methods removed the same blocks: one model)")
    if any(abs(h[0]) > 2 * h[1] for _, _, h in rows):
        return _verdict(False, ev)
    if not any(u[0] > 2 * u[1] for _, u, _ in rows):
        return _verdict(None, ev + " (no unhealed gap to close)")
    return _verdict(True, ev)


def claim_healing_smooths_loss(df: pd.DataFrame, model: str) -> str:
    """Gromov Fig. 3: unhealed, C4 loss jumps; healed, it rises slowly and smoothly. Rise =
    loss - the unpruned loss; two healed fractions cannot show a curve's shape, so the rule
    reads its size: holds when healing removes at least half of the unhealed rise at every
    healed fraction of both methods, does not hold when it removes less somewhere."""
    parts, shares = [], []
    for method in ("deeper_layers", "last_layers"):
        u, h = _curve(df, model, method), _curve(df, model, f"{method} + lora")
        h = h[h["fraction"] > 0]
        if h.empty or "c4/loss" not in h:
            continue
        base = u[u["fraction"] == 0]["c4/loss"].iloc[0]
        ru = {f: x - base for f, x in zip(u["fraction"], u["c4/loss"], strict=True)}
        rh = {f: x - base for f, x in zip(h["fraction"], h["c4/loss"], strict=True)}
        fs = sorted(f for f in rh if f in ru)
        removed = {f: 1 - rh[f] / ru[f] for f in fs}
        shares += removed.values()
        rises = ", ".join(
            f"{_frac(f)}: {ru[f]:+.2f} -> {rh[f]:+.2f} ({removed[f]:.0%} removed)" for f in fs
        )
        parts.append(f"{method} C4 loss rise unhealed -> healed {rises}")
    if not shares:
        return "not run"
    return _verdict(min(shares) >= 0.5, f"unpruned C4 loss {base:.3f}; " + "; ".join(parts))


def claim_finercut_attention(df: pd.DataFrame, model: str, fraction: float = 0.25) -> str:
    """FinerCut Fig. 4: at 25% of the sublayers, far more attention than MLP goes, and the
    removed attention sits deep. Rule: holds when attention >= 2x MLP and the removed
    attention's mean relative depth (block / (L - 1)) is above 0.5; does not hold otherwise
    (fewer than 2x as many attention as MLP, or that depth at most 0.5)."""
    c = _curve(df, model, "finercut")
    c = c[np.isclose(c["fraction"], fraction)]
    if c.empty or "ids/attention" not in c or pd.isna(c["ids/attention"].iloc[0]):
        return "not run"  # (or rows from a report older than the ids/ columns)
    row = c.iloc[0]
    attention, mlp = removed_sublayers(row)
    size = num_blocks(df, model)
    depth = float(np.mean(attention)) / (size - 1) if attention else float("nan")
    ev = (
        f"{len(attention)} attention, {len(mlp)} MLP of {size} blocks removed; removed "
        f"attention's mean depth {depth:.2f} (blocks {attention})"
    )
    return _verdict(len(attention) >= 2 * len(mlp) and depth > 0.5, ev)


def claim_finercut_beats_blocks(df: pd.DataFrame, model: str) -> str:
    """FinerCut: at an equal share of parameters removed, it keeps more accuracy than block
    pruning. Each block method's mean accuracy (seven tasks) is interpolated linearly in
    parameters removed at each FinerCut point; diff = FinerCut - the best block method. Rule:
    holds when diff > 2 stderr at most FinerCut points, does not hold when diff < -2 stderr
    at most, else cannot tell."""
    fc = _curve(df, model, "finercut")
    fc = fc[fc["fraction"] > 0]
    if fc.empty:
        return "not run"
    fm, fs = mean_accuracy(fc, ACCURACIES)
    parts, score = [], []
    for p, m, s in zip(fc["params_removed"], fm, fs, strict=True):
        best = None
        for method in BLOCK_METHODS:
            b = _curve(df, model, method).sort_values("params_removed")
            if len(b) < 2:
                continue
            bm, bs = mean_accuracy(b, ACCURACIES)
            value = float(np.interp(p, b["params_removed"], bm))
            se = float(np.interp(p, b["params_removed"], bs))
            if best is None or value > best[1]:
                best = (method, value, se)
        if best is None:
            continue
        diff, se = m - best[1], math.hypot(s, best[2])
        score.append(1 if diff > 2 * se else -1 if diff < -2 * se else 0)
        parts.append(
            f"{p:.1%} params: {m:.3f} vs {best[0]} {best[1]:.3f} ({diff:+.3f} +- {se:.3f})"
        )
    if not parts:
        return "not run"
    half = len(score) / 2
    wins, losses = score.count(1), score.count(-1)
    return _verdict(True if wins > half else False if losses > half else None, "; ".join(parts))


CLAIMS: list[tuple[str, Callable]] = [
    ("Deeper blocks are the most similar (l*(n) deep)", None),  # needs the scans
    ("Accuracy holds, then collapses to chance (collapse fraction)", claim_collapse),
    (
        "Unhealed, the similarity method beats dropping the last blocks",
        claim_similarity_beats_heuristic,
    ),
    ("Healed, the heuristic is about as good as the similarity method", claim_healing_closes_gap),
    ("Healing turns the C4-loss jump into a smooth rise", claim_healing_smooths_loss),
    ("FinerCut removes attention far more than MLP, deeper ones more", claim_finercut_attention),
    ("FinerCut beats block pruning at equal parameters removed", claim_finercut_beats_blocks),
]


def claims_table(df: pd.DataFrame, models: list[str], scans: dict[str, dict[str, Scan]]) -> str:
    """The claims x models markdown table, each cell the verdict and its numbers."""
    lines = ["| claim | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for claim, check in CLAIMS:
        if check is None:
            cells = [claim_deeper_most_similar(scans.get(m, {})) for m in models]
        else:
            cells = [check(df, m) for m in models]
        lines.append(f"| {claim} | " + " | ".join(cells) + " |")
    rules = [
        f"- *{claim}*: {' '.join((check or claim_deeper_most_similar).__doc__.split())}"
        for claim, check in CLAIMS
    ]
    return (
        "\n".join(lines)
        + "\n\nRules (stderr: lm-eval's, combined over tasks as sqrt(sum se^2)/k):\n\n"
        + "\n".join(rules)
        + "\n"
    )


# --- figures ---


def plot_heatmaps(scans: dict[str, Scan], path: Path) -> Path:
    """d(l, n) of every model side by side (angular, last token), the argmin per n marked."""
    fig, axes = plt.subplots(1, len(scans), figsize=(5.6 * len(scans), 4.6), squeeze=False)
    for ax, (model, scan) in zip(axes[0], scans.items(), strict=True):
        draw_heatmap(ax, distance_grid(scan, "angular", "last"), "angular distance")
        ax.set_title(f"{model}: {scan.num_sequences} sequences", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_removed_maps(df: pd.DataFrame, path: Path, fraction: float = 0.25) -> Path | None:
    """FinerCut's removed attention / MLP per block at ``fraction``, one row per model."""
    rows = df[(df["variant"] == "finercut") & np.isclose(df["fraction"], fraction)]
    rows = rows.drop_duplicates("model")
    if "ids/attention" in rows:
        rows = rows[rows["ids/attention"].notna()]
    if rows.empty or "ids/attention" not in rows:
        return None
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 1.9 * len(rows)), squeeze=False)
    for ax, (_, row) in zip(axes[:, 0], rows.iterrows(), strict=True):
        removed = dict(zip(("attention", "mlp"), removed_sublayers(row), strict=True))
        size = num_blocks(df, row["model"])
        draw_removed_map(ax, removed["attention"], removed["mlp"], size)
        ax.set_title(
            f"{row['model']}: {len(removed['attention'])} attention, "
            f"{len(removed['mlp'])} MLP removed "
            f"({_frac(fraction)} of {2 * size} sublayers)",
            fontsize=9,
        )
    fig.tight_layout()
    return _save(fig, path)


def plot_calibration_sizes(out: Path, path: Path) -> Path | None:
    """The calibration-size study of every model whose CSV is in ``out``, side by side."""
    from layerprune.studies.calibration_size import draw_agreement

    csvs = sorted(out.glob("calibration_size_*.csv"))
    if not csvs:
        return None
    fig, axes = plt.subplots(1, len(csvs), figsize=(5.2 * len(csvs), 3.8), squeeze=False)
    for ax, csv in zip(axes[0], csvs, strict=True):
        draw_agreement(ax, pd.read_csv(csv), csv.stem.removeprefix("calibration_size_"))
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=120)
    fig.savefig(Path(path).with_suffix(".pdf"))
    plt.close(fig)
    return Path(path)


def load_scans(models: list[str]) -> dict[str, dict[str, Scan]]:
    """Per model: the experiment's scan (32 C4 sequences, seed 0) and the all-documents one,
    through the scan cache (computed, once, when missing)."""
    from layerprune.config import CalibrationConfig, ModelConfig
    from layerprune.data.text import load_documents
    from layerprune.models.load import load_model
    from layerprune.scan.run import calibrated_scan

    every = len(load_documents("c4", "calibration"))
    out = {}
    for model in models:
        lm = load_model(ModelConfig(name=model, source="asset", id=model))
        out[model] = {
            "32 docs": calibrated_scan(lm, CalibrationConfig())[0],
            f"all {every} docs": calibrated_scan(lm, CalibrationConfig(num_sequences=every))[0],
        }
        del lm
    return out


def build_cross_family(
    roots: list[Path], out: Path, scans: dict[str, dict[str, Scan]] | None = None
) -> pd.DataFrame:
    """Tables, figures and ``claims.md`` into ``out``; returns the rows the figures use."""
    build_report(roots, out, METRICS, title="cross-family")
    rows = pd.read_parquet(out / "all.parquet")
    df = variants(rows)
    present = set(rows["model"])  # with only an unpruned row a model still gets its scan claim
    models = [m for m in ("smollm2-135m", "gemma3-270m", "qwen2.5-0.5b") if m in present]
    models += sorted(present - set(models))
    order = {m: i for i, m in enumerate(models)}  # the families in size order, in every figure
    df = df.sort_values(
        ["model", "variant", "fraction"], key=lambda c: c.map(order) if c.name == "model" else c
    )
    # per task: curves_<model>.png; side by side: Gromov's MMLU and BoolQ, the mean, C4 loss
    cols = [m for m in ("mmlu/acc", "boolq/acc", "mean/acc", "c4/loss") if m in df]
    blocks = df[df["variant"].isin(BLOCK_METHODS)]
    if not blocks.empty:
        plot_curves(blocks, cols, out / "accuracy.png", by="variant", rows="model")
    healing = df[df["variant"].str.startswith(("deeper_layers", "last_layers"))]
    if (healing["healing"].fillna("none") != "none").any():
        plot_curves(healing, cols, out / "healing.png", by="variant", rows="model")
    plot_curves(
        df,
        ["mean_retention"],
        out / "retention.png",
        by="variant",
        rows="model",
        x="params_removed",
    )
    plot_removed_maps(df, out / "removed_sublayers.png")
    plot_calibration_sizes(out, out / "calibration_size.png")
    if scans is None:
        scans = load_scans(models)
    if scans:
        plot_heatmaps(
            {
                m: s["32 docs"] if "32 docs" in s else next(iter(s.values()))
                for m, s in scans.items()
            },
            out / "heatmaps.png",
        )
    (out / "claims.md").write_text(claims_table(df, models, scans))
    return df


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("roots", nargs="+", type=Path, help="folders of results.json / all.parquet")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    build_cross_family(args.roots, args.out)
    print((args.out / "claims.md").read_text())


if __name__ == "__main__":
    main()
