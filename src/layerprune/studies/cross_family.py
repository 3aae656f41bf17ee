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
import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from layerprune.report.cli import build_report  # noqa: E402
from layerprune.report.curves import plot_curves  # noqa: E402
from layerprune.report.heatmap import distance_grid, draw_heatmap  # noqa: E402
from layerprune.report.pairs import job_items  # noqa: E402
from layerprune.report.style import model_title  # noqa: E402
from layerprune.report.sublayers import draw_removed_map  # noqa: E402
from layerprune.report.verdicts import judge, rule_text, verdict, word  # noqa: E402
from layerprune.results import Results  # noqa: E402
from layerprune.scan.residual import Scan  # noqa: E402
from layerprune.stats import holm, paired_mean  # noqa: E402
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
    the unpruned model is the fraction-0 point of every variant of its model (variant "none"
    for a model with no pruned job yet, so that its claims can still read its unpruned scores)."""
    healed = df["healing"].fillna("none")
    name = df["method"] + np.where(healed != "none", " + " + healed, "")
    df = df.assign(variant=name, params_removed=1 - df["params_ratio"])
    removed = df["removed_blocks"] + df["removed_attention"] + df["removed_mlp"]
    base, pruned = df[(removed == 0) & (healed == "none")], df[removed > 0]
    starts = [
        base[base["model"] == m].assign(variant=v)
        for m, v in pruned[["model", "variant"]].drop_duplicates().itertuples(index=False)
    ]
    alone = base[~base["model"].isin(pruned["model"])]  # no pruned job yet: its unpruned row
    df = pd.concat([pruned, *starts, alone.assign(variant="none")], ignore_index=True)
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


# --- the claims: each takes one model's rows (and scans) and returns "verdict: numbers"; its
# keyword-only parameters are its thresholds (``report/verdicts.judge`` varies them) ---


def claim_deeper_most_similar(
    scans: dict[str, Scan], *, share: float = 2 / 3, deep_from: float = 2 / 3
) -> str:
    """Gromov: the most similar block of n (l*(n)) sits deep in the network. "Deep": the
    block's centre, l*(n) + (n - 1) / 2, in the last third of the blocks (>= deep_from x
    (L - 1); the centre, so that a block longer than L/3 can still be deep). Rule: holds when
    l*(n) is deep for at least `share` of n = 1 .. L/2 in the all-documents scan, does not
    hold for at most 1 - share, else cannot tell."""
    parts, share_all = [], None
    for label, scan in scans.items():
        size = scan.num_blocks
        ns = range(1, size // 2 + 1)
        picks = choices(scan, "deeper_layers angular/last")  # l*(n), as the study reads it
        starts = [picks[n] for n in ns]
        centres = [s + (n - 1) / 2 for s, n in zip(starts, ns, strict=True)]
        deep = sum(c >= deep_from * (size - 1) for c in centres)
        parts.append(f"{label}: {deep}/{len(starts)} n deep, l*(1..{size // 2}) = {starts}")
        if label.startswith("all") or share_all is None:  # the verdict: all documents'
            share_all = deep / len(starts)
    if share_all is None:
        return "not run"
    holds = True if share_all >= share else False if share_all <= 1 - share else None
    return verdict(holds, "; ".join(parts))


def claim_collapse(
    df: pd.DataFrame, model: str, *, plateau: float = 0.8, z: float = 2.0, tasks=tuple(ACCURACIES)
) -> str:
    """Gromov: accuracy holds up to a model-dependent fraction, then falls to chance (MMLU:
    Llama-2 45-55%, Mistral 35%, Qwen 20%). Read on deeper_layers (unhealed): MMLU's
    above-chance accuracy, or, when the unpruned MMLU is within z stderr of chance, the mean
    above-chance accuracy of the six 0-shot tasks. Plateau = the pruned fractions keeping >=
    `plateau` of it; collapse = the first fraction within z stderr of chance. Rule: holds when
    there is a plateau and a later collapse (the number is the collapse fraction); does not
    hold when below `plateau` already at the first pruned fraction; cannot tell without a
    collapse."""
    c = _curve(df, model, "deeper_layers")
    if len(c) < 2 or "mmlu/acc" not in c:
        return "not run"
    mmlu = c["mmlu/acc"] - c["mmlu/chance"]
    mmlu_se = c["mmlu/acc_stderr"]
    head = (
        f"unpruned MMLU {c['mmlu/acc'].iloc[0]:.3f} +- {mmlu_se.iloc[0]:.3f} "
        f"(chance {c['mmlu/chance'].iloc[0]:.2f})"
    )
    if "mmlu/acc" in tasks and mmlu.iloc[0] > z * mmlu_se.iloc[0]:
        gap, se, read = mmlu, mmlu_se, "MMLU"
    else:
        gap, se = above_chance(c, [t for t in ZERO_SHOT if t in tasks])
        read, head = "the 0-shot tasks", head + ", at chance: read from the 0-shot tasks"
    fractions = list(c["fraction"])
    at_chance = [f for f, g, s in zip(fractions, gap, se, strict=True) if f > 0 and g <= z * s]
    kept = (gap / gap.iloc[0]).round(2).tolist()
    curve = ", ".join(f"{_frac(f)}: {k:.2f}" for f, k in zip(fractions, kept, strict=True))
    evidence = f"{head}; share of above-chance accuracy kept ({read}) {curve}"
    if gap.iloc[0] <= z * se.iloc[0]:
        return verdict(None, evidence + "; unpruned already at chance")
    if kept[1] < plateau:
        return verdict(False, evidence + f"; no plateau ({kept[1]:.2f} at {_frac(fractions[1])})")
    top = max(f for f, k in zip(fractions, kept, strict=True) if f > 0 and k >= plateau)
    evidence += f"; plateau up to {_frac(top)}"
    if not at_chance:
        return verdict(None, evidence + f", no collapse up to {_frac(max(fractions))}")
    return verdict(True, evidence + f", collapse (at chance) from {_frac(at_chance[0])}")


class Gap(NamedTuple):
    diff: float  # mean accuracy of a - b
    se: float  # its standard error
    same: bool  # the two removed the same blocks: one model, the gap says nothing
    paired: bool  # se from a paired bootstrap on the same items (else the two stderrs added)


def _gap(
    df: pd.DataFrame, model: str, a: str, b: str, f: float, tasks=tuple(ACCURACIES)
) -> Gap | None:
    """Mean accuracy of variant a - variant b at fraction f and its stderr. Paired when both
    jobs stored per-item results for every task read: the two were scored on the same items,
    so the stderr is that of the per-item differences (``stats.paired_mean``, a bootstrap 95%
    interval / 3.92). Otherwise unpaired: the two stderrs add as if the items differed, which
    overstates the stderr of a difference on the same items."""
    ra, rb = _curve(df, model, a), _curve(df, model, b)
    ra, rb = ra[np.isclose(ra["fraction"], f)], rb[np.isclose(rb["fraction"], f)]
    if ra.empty or rb.empty:
        return None
    (ma, sa), (mb, sb) = (tuple(x.iloc[0] for x in mean_accuracy(r, list(tasks))) for r in (ra, rb))
    same = bool("ids/blocks" in ra and ra["ids/blocks"].iloc[0] == rb["ids/blocks"].iloc[0])
    metrics = dict(t.split("/", 1) for t in tasks)
    items = [job_items(str(r["path"].iloc[0])) if "path" in r else {} for r in (ra, rb)]
    if all(task in i for i in items for task in metrics):
        d = paired_mean(items[1], items[0], metrics)  # B - A = a - b
        return Gap(d.diff, (d.high - d.low) / (2 * 1.959964), same, True)
    return Gap(ma - mb, math.hypot(sa, sb), same, False)


def _gap_text(gap: Gap) -> str:
    text = f"{gap.diff:+.3f} +- {gap.se:.3f}" + (" paired" if gap.paired else "")
    return text + (" (same blocks)" if gap.same else "")


def claim_similarity_beats_heuristic(
    df: pd.DataFrame, model: str, *, z: float = 2.0, tasks=tuple(ACCURACIES)
) -> str:
    """Gromov Fig. 5: unhealed, the similarity method is much better than dropping the last
    blocks. Mean accuracy over the tasks read, deeper_layers - last_layers, at each fraction
    where the two removed different blocks (where they removed the same, they are one model).
    Rule: holds when the gap exceeds z stderr at most of those fractions, does not hold when it
    is negative beyond z stderr at most; cannot tell otherwise or without such a fraction."""
    fractions = sorted(f for f in _curve(df, model, "deeper_layers")["fraction"] if f > 0)
    gaps = [
        (f, g)
        for f in fractions
        if (g := _gap(df, model, "deeper_layers", "last_layers", f, tasks))
    ]
    if not gaps:
        return "not run"
    ev = "mean accuracy deeper_layers - last_layers: " + ", ".join(
        f"{_frac(f)}: {_gap_text(g)}" for f, g in gaps
    )
    differ = [(g.diff, g.se) for _, g in gaps if not g.same]
    if not differ:
        return verdict(None, ev + "; the two chose the same blocks at every fraction")
    wins = sum(d > z * s for d, s in differ)
    losses = sum(d < -z * s for d, s in differ)
    holds = True if wins > len(differ) / 2 else False if losses > len(differ) / 2 else None
    return verdict(holds, ev)


def claim_healing_closes_gap(
    df: pd.DataFrame, model: str, *, z: float = 2.0, tasks=tuple(ACCURACIES)
) -> str:
    """Gromov: healed, the simple heuristic is about as good as the similarity method. Read at
    the healed fractions where the two methods removed different blocks. Rule: holds when the
    healed gap (deeper_layers + lora - last_layers + lora, mean accuracy) is within z stderr at
    every such fraction while an unhealed gap there exceeded z stderr; does not hold when a
    healed gap exceeds z stderr; cannot tell when there was no gap to close (or no fraction
    where the methods differ)."""
    rows = []
    for f in sorted(f for f in _curve(df, model, "deeper_layers + lora")["fraction"] if f > 0):
        healed = _gap(df, model, "deeper_layers + lora", "last_layers + lora", f, tasks)
        unhealed = _gap(df, model, "deeper_layers", "last_layers", f, tasks)
        if healed and unhealed:
            rows.append((f, unhealed, healed))
    if not rows:
        return "not run"
    ev = "; ".join(
        f"{_frac(f)}: unhealed {_gap_text(u)}, healed {_gap_text(h)}" for f, u, h in rows
    )
    rows = [(f, u, h) for f, u, h in rows if not u[2]]
    if not rows:
        return verdict(None, ev + " (the two methods removed the same blocks: one model)")
    if any(abs(h[0]) > z * h[1] for _, _, h in rows):
        return verdict(False, ev)
    if not any(u[0] > z * u[1] for _, u, _ in rows):
        return verdict(None, ev + " (no unhealed gap to close)")
    return verdict(True, ev)


def claim_healing_smooths_loss(df: pd.DataFrame, model: str, *, share: float = 0.5) -> str:
    """Gromov Fig. 3: unhealed, C4 loss jumps; healed, it rises slowly and smoothly. Rise =
    loss - the unpruned loss; two healed fractions cannot show a curve's shape, so the rule
    reads its size: holds when healing removes at least `share` of the unhealed rise at every
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
            f"{_frac(f)}: {ru[f]:+.2f} -> {rh[f]:+.2f} ({removed[f]:.1%} removed)" for f in fs
        )
        parts.append(f"{method} C4 loss rise unhealed -> healed {rises}")
    if not shares:
        return "not run"
    return verdict(min(shares) >= share, f"unpruned C4 loss {base:.3f}; " + "; ".join(parts))


def claim_finercut_attention(
    df: pd.DataFrame, model: str, fraction: float = 0.25, *, ratio: float = 2.0, depth: float = 0.5
) -> str:
    """FinerCut Fig. 4: at 25% of the sublayers, far more attention than MLP goes, and the
    removed attention sits deep. Rule: holds when attention >= `ratio` x MLP and the removed
    attention's mean relative depth (block / (L - 1)) is above `depth` (the paper's claim is
    relative: more of it in the deeper half); does not hold otherwise."""
    c = _curve(df, model, "finercut")
    c = c[np.isclose(c["fraction"], fraction)]
    if c.empty or "ids/attention" not in c or pd.isna(c["ids/attention"].iloc[0]):
        return "not run"  # (or rows from a report older than the ids/ columns)
    row = c.iloc[0]
    attention, mlp = removed_sublayers(row)
    size = num_blocks(df, model)
    mean_depth = float(np.mean(attention)) / (size - 1) if attention else float("nan")
    ev = (
        f"{len(attention)} attention, {len(mlp)} MLP of {size} blocks removed; removed "
        f"attention's mean depth {mean_depth:.2f} (blocks {attention})"
    )
    return verdict(len(attention) >= ratio * len(mlp) and mean_depth > depth, ev)


def _z_p(diff: float, se: float) -> float:
    """Two-sided normal p of diff / se."""
    return math.erfc(abs(diff) / se / math.sqrt(2)) if se > 0 else float(diff == 0)


def claim_finercut_beats_blocks(
    df: pd.DataFrame, model: str, *, alpha: float = 0.05, tasks=tuple(ACCURACIES)
) -> str:
    """FinerCut: at an equal share of parameters removed, it keeps more accuracy than block
    pruning. Each block method's mean accuracy (the tasks read) is interpolated linearly in
    parameters removed at each FinerCut point and compared with FinerCut there, method by
    method (not the best one picked afterwards): diff = FinerCut - method, a two-sided z test
    (unpaired stderrs), Holm-adjusted over every point x method. Rule: holds when FinerCut is
    significantly ahead (adjusted p < alpha) at most points against every block method; does
    not hold when it is significantly behind at most points against some method; else cannot
    tell."""
    fc = _curve(df, model, "finercut")
    fc = fc[fc["fraction"] > 0]
    if fc.empty:
        return "not run"
    fm, fs = mean_accuracy(fc, list(tasks))
    tests = []  # (method, params removed, finercut, block, diff, se)
    for method in BLOCK_METHODS:
        b = _curve(df, model, method).sort_values("params_removed")
        if len(b) < 2:
            continue
        bm, bs = mean_accuracy(b, list(tasks))
        for p, m, s in zip(fc["params_removed"], fm, fs, strict=True):
            value = float(np.interp(p, b["params_removed"], bm))
            se = math.hypot(s, float(np.interp(p, b["params_removed"], bs)))
            tests.append((method, p, m, value, m - value, se))
    if not tests:
        return "not run"
    adjusted = holm([_z_p(t[4], t[5]) for t in tests])
    parts, outcome = [], {}
    for (method, p, m, value, diff, se), q in zip(tests, adjusted, strict=True):
        sign = (1 if diff > 0 else -1) if q < alpha else 0
        outcome.setdefault(method, []).append(sign)
        parts.append(
            f"{p:.1%} params: {m:.3f} vs {method} {value:.3f} ({diff:+.3f} +- {se:.3f}, p_holm {q:.2g})"
        )
    ahead = all(s.count(1) > len(s) / 2 for s in outcome.values())
    behind = any(s.count(-1) > len(s) / 2 for s in outcome.values())
    holds = True if ahead else False if behind else None
    return verdict(holds, f"{len(tests)} comparisons; " + "; ".join(parts))


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


def informative_tasks(
    df: pd.DataFrame, model: str, majority: dict[str, float], z: float = 2.0
) -> tuple[list[str], list[str]]:
    """The accuracy columns whose unpruned score beats both chance and the items' majority-class
    rate by more than z stderr (the claims read these), and the rest with their numbers: on
    the others a pruned model can score like the unpruned one by answering a constant."""
    base = df[(df["model"] == model) & (df["fraction"] == 0)]
    kept, excluded = [], []
    for task in ACCURACIES:
        if task not in base or base[task].isna().all():
            continue
        row = base.iloc[0]
        name = task.rsplit("/", 1)[0]
        floor = max(row.get(f"{name}/chance", 0.0), majority.get(name, 0.0))
        if row[task] - floor > z * row[f"{task}_stderr"]:
            kept.append(task)
        else:
            excluded.append(f"{name} ({row[task]:.3f} vs floor {floor:.3f})")
    return kept, excluded


def claims_table(
    df: pd.DataFrame,
    models: list[str],
    scans: dict[str, dict[str, Scan]],
    majority: dict[str, float] | None = None,
) -> str:
    """The claims x models markdown table, each cell the verdict, its sensitivity to the rule's
    thresholds (``report/verdicts.judge``) and its numbers; then the rules. With ``majority``
    (per task, the items' majority-class rate) the accuracy claims read only the tasks the
    unpruned model answers above it (``informative_tasks``), and a cell whose verdict differs
    with every task says so."""
    titles = [m if model_title(m) == m else f"{model_title(m)} (`{m}`)" for m in models]
    lines = ["| claim | " + " | ".join(titles) + " |", "|---" * (len(models) + 1) + "|"]
    read = {m: informative_tasks(df, m, majority) if majority else (ACCURACIES, []) for m in models}
    if majority:
        cells = [
            f"{len(read[m][0])} of {len(read[m][0]) + len(read[m][1])}; excluded: "
            f"{', '.join(read[m][1]) or 'none'}"
            for m in models
        ]
        lines.append(
            "| Tasks read (unpruned above chance and majority by > 2 stderr) | "
            + " | ".join(cells)
            + " |"
        )
    for claim, check in CLAIMS:
        if check is None:
            cells = [judge(claim_deeper_most_similar, scans.get(m, {})) for m in models]
        else:
            cells = []
            for m in models:
                tasks = tuple(read[m][0])
                reads_tasks = "tasks" in inspect.signature(check).parameters
                cell = judge(check, df, m, **({"tasks": tasks} if reads_tasks else {}))
                every = word(check(df, m))
                if reads_tasks and tasks != tuple(ACCURACIES) and every not in (None, word(cell)):
                    cell += f" (with every task: **{every}**)"
                cells.append(cell)
        lines.append(f"| {claim} | " + " | ".join(cells) + " |")
    rules = [
        f"- *{claim}*: {rule_text(check or claim_deeper_most_similar)}" for claim, check in CLAIMS
    ]
    return (
        "\n".join(lines)
        + "\n\nEach verdict is also read with every threshold of its rule at x0.75 and x1.25, "
        "one at a time: *fragile* names the threshold that flips it. Rules (stderr: lm-eval's, "
        "combined over tasks as sqrt(sum se^2)/k; a difference between two jobs is *paired* "
        "where both stored per-item results for every task read (a bootstrap over the "
        "per-item differences on the same items, marked 'paired'), else unpaired, the two "
        "stderrs added):\n\n" + "\n".join(rules) + "\n"
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
    fig.savefig(Path(path).with_suffix(".pdf"), metadata={"CreationDate": None})  # reproducible
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
    roots: list[Path],
    out: Path,
    scans: dict[str, dict[str, Scan]] | None = None,
    majority: dict[str, float] | None = None,
) -> pd.DataFrame:
    """Tables, figures and ``claims.md`` into ``out``; returns the rows the figures use.
    ``majority``: per task, the evaluated items' majority-class rate (default: computed from
    the jobs' benchmark settings without a model, ``evaluate/baselines``)."""
    build_report(roots, out, METRICS, title="cross-family")
    rows = pd.read_parquet(out / "all.parquet")
    folders = {f.parent.name: str(f.parent) for r in roots for f in Path(r).rglob("results.json")}
    if "job" in rows:  # where each job's per-item results are, for the paired gaps
        rows["path"] = rows["job"].map(folders).fillna("")
    df = variants(rows)
    present = set(rows["model"])  # with only an unpruned row a model still gets its scan claim
    models = [m for m in ("smollm2-135m", "gemma3-270m", "qwen2.5-0.5b") if m in present]
    models += sorted(present - set(models))
    order = {m: i for i, m in enumerate(models)}  # the families in size order, in every figure
    df = df.sort_values(
        ["model", "variant", "fraction"], key=lambda c: c.map(order) if c.name == "model" else c
    )
    if majority is None:
        majority = majority_rates(roots)
    for task, rate in majority.items():  # drawn as a dotted line beside chance
        df[f"{task}/majority"] = rate
    if majority and "mean_retention" in df:
        df["mean_retention/majority"] = retention_floor(df, majority)
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
    (out / "claims.md").write_text(claims_table(df, models, scans, majority))
    return df


def retention_floor(df: pd.DataFrame, majority: dict[str, float]) -> pd.Series:
    """Per row, the mean retention of a model that answers every task with its items' majority
    answer (at least chance): the floor a pruned model that has stopped reading the question
    sits on, drawn under the retention curves."""
    tasks = [t for t in ACCURACIES if t in df]
    base = df[df["fraction"] == 0].groupby("model")[tasks].mean()
    parts = []
    for t in tasks:
        name = t.rsplit("/", 1)[0]
        floor = np.maximum(df[f"{name}/chance"], majority.get(name, 0.0))
        parts.append(floor / df["model"].map(base[t]))
    return sum(parts) / len(parts)


def majority_rates(roots: list[Path]) -> dict[str, float]:
    """Per task, the majority-class rate of the items the jobs under ``roots`` evaluated (their
    benchmark settings, read from the first ``results.json``; the same items for every model)."""
    from layerprune.evaluate.baselines import task_baselines

    files = [f for root in roots for f in sorted(Path(root).rglob("results.json"))]
    if not files:
        return {}
    bench = Results.load(files[0]).config.get("benchmark")
    if not bench or not bench.get("tasks"):
        return {}
    tasks = [(t["name"], t["num_fewshot"], t["limit"]) for t in bench["tasks"]]
    rates = task_baselines(tasks, bench.get("data", "offline"))
    return {name: r["majority"] for name, r in rates.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("roots", nargs="+", type=Path, help="folders of results.json / all.parquet")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    build_cross_family(args.roots, args.out)
    print((args.out / "claims.md").read_text())


if __name__ == "__main__":
    main()
