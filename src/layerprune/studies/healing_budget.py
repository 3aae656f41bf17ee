"""Issue #29's healing-budget study: accuracy kept and C4 loss against healing tokens, per arm
(method x healer), with paired comparisons on the same items.

    python -m layerprune.studies.healing_budget outputs/runs --out experiments/healing_budget

Reads every ``results.json`` of ``experiment=healing_budget`` / ``healing_budget_qwen`` under
the roots. Accuracy is the mean over the five tasks (ARC-E acc, ARC-C acc_norm, PIQA acc,
WinoGrande acc, HellaSwag acc_norm); its retention is pruned / unpruned, with a paired
bootstrap interval of the difference (items resampled within each task, the tasks weighed
equally: ``stats.paired_mean``). Writes ``table.md`` / ``table.csv``, ``retention.png``,
``c4_loss.png`` (log token axis; the unpruned and unhealed models as lines), ``pairs.md``
(healed vs unhealed, KD vs CE at equal tokens, healed heuristic vs similarity, with
Holm-adjusted p over the budgets) and ``claims.md`` (Gromov's two healing claims for this budget range, each verdict with its
sensitivity to the threshold).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from layerprune.report.style import color, model_order, model_title  # noqa: E402
from layerprune.results import Results  # noqa: E402
from layerprune.stats import holm, paired_mean  # noqa: E402

TASKS = {
    "arc_easy": "acc",
    "arc_challenge": "acc_norm",
    "piqa": "acc",
    "winogrande": "acc",
    "hellaswag": "acc_norm",
}
EXPERIMENTS = ("healing_budget", "healing_budget_qwen")
STYLE = {"none": "", "lora": "-", "kd": "--", "partial": ":"}
NAMES = {"lora": "CE-LoRA", "kd": "KD-LoRA", "partial": "partial", "none": "unhealed"}


@dataclass
class Job:
    model: str
    method: str  # "none" for the unpruned model
    healer: str
    tokens: int
    r: Results


def collect(roots: list[Path]) -> list[Job]:
    jobs, seen = [], set()
    for root in roots:
        for path in sorted(Path(root).rglob("results.json")):
            r = Results.load(path)
            if r.config.get("experiment") not in EXPERIMENTS or not r.items:
                continue
            healer = (r.healing or {}).get("method", "none")
            tokens = (r.healing or {}).get("tokens", 0)
            key = (r.config["model"]["name"], r.plan["method"], healer, tokens)
            if key not in seen:  # one job reached through two roots (store and sweep)
                seen.add(key)
                jobs.append(Job(*key, r))
    return jobs


def mean_accuracy(r: Results) -> tuple[float, float]:
    """Mean over TASKS and its stderr, sqrt(sum se^2) / k."""
    vals = [r.metrics[f"{t}/{m}"] for t, m in TASKS.items()]
    ses = [r.metrics[f"{t}/{m}_stderr"] for t, m in TASKS.items()]
    return float(np.mean(vals)), float(np.sqrt(np.sum(np.square(ses))) / len(ses))


def table(jobs: list[Job]) -> pd.DataFrame:
    rows = []
    for model in model_order(j.model for j in jobs):
        mine = [j for j in jobs if j.model == model]
        base = next((j for j in mine if j.method == "none"), None)
        if base is None:
            continue
        base_acc = mean_accuracy(base.r)[0]
        for j in mine:
            acc, se = mean_accuracy(j.r)
            row = {
                "model": model,
                "title": model_title(model, j.r.model.get("title", "")),
                "method": j.method,
                "healing": j.healer,
                "tokens": j.tokens,
                "epochs": (j.r.healing or {}).get("epochs", 0.0),
                "mean_acc": acc,
                "mean_acc_se": se,
                "retention": acc / base_acc,
                "c4/loss": j.r.metrics.get("c4/loss"),
                "wiki/ppl": j.r.metrics.get("wiki/ppl"),
                # a run resumed from a snapshot timed only its own steps (none: no timing)
                "resumed_from": (j.r.healing or {}).get("resumed_from", 0),
                "heal_s": j.r.timings.get("heal_s", 0.0),
                "tokens_per_s": (j.r.healing or {}).get("tokens_per_s", 0.0),
            }
            if j.tokens and not row["tokens_per_s"]:
                row["heal_s"] = row["tokens_per_s"] = float("nan")
            if j.method != "none":
                d = paired_mean(base.r.items, j.r.items, TASKS)
                row |= {
                    "retention_low": 1 + d.low / base_acc,
                    "retention_high": 1 + d.high / base_acc,
                }
            rows.append(row)
    return pd.DataFrame(rows)


def pairs(jobs: list[Job]) -> list[dict]:
    """Healed - unhealed at each budget (per method and healer: does healing recover
    accuracy?), KD - CE at equal tokens (per method), and healed deeper_layers - last_layers at
    equal tokens (per healer), paired on the same items; Holm over each family's budgets."""
    index = {(j.model, j.method, j.healer, j.tokens): j for j in jobs}
    out = []
    families = []
    for model in model_order(j.model for j in jobs):
        for method in ("deeper_layers", "last_layers"):
            unhealed = index.get((model, method, "none", 0))
            for healer in ("lora", "kd"):
                fam = [
                    {
                        "model": model,
                        "compare": f"{method}: {NAMES[healer]} - unhealed",
                        "tokens": t,
                        "d": paired_mean(unhealed.r.items, j.r.items, TASKS),
                    }
                    for (m, me, h, t), j in sorted(index.items())
                    if unhealed is not None and (m, me, h) == (model, method, healer)
                ]
                families.append(fam)
            fam = []
            for (m, me, h, t), j in sorted(index.items()):
                if (m, me, h) == (model, method, "kd") and (m, me, "lora", t) in index:
                    ce = index[(m, me, "lora", t)]
                    fam.append(
                        {
                            "model": model,
                            "compare": f"{method}: KD - CE",
                            "tokens": t,
                            "d": paired_mean(ce.r.items, j.r.items, TASKS),
                        }
                    )
            families.append(fam)
        for healer in ("none", "lora", "kd"):
            fam = []
            for (m, me, h, t), j in sorted(index.items()):
                if (m, me, h) == (model, "deeper_layers", healer) and (
                    m,
                    "last_layers",
                    h,
                    t,
                ) in index:
                    last = index[(m, "last_layers", h, t)]
                    fam.append(
                        {
                            "model": model,
                            "compare": f"{NAMES[healer]}: deeper - last",
                            "tokens": t,
                            "d": paired_mean(last.r.items, j.r.items, TASKS),
                        }
                    )
            families.append(fam)
    for fam in families:
        for row, p in zip(fam, holm([r["d"].p for r in fam]), strict=True):
            out.append({**row, "p_holm": p, "tests": len(fam)})
    return out


# -- claims, each with its threshold as a parameter and its sensitivity --------------------


def verdict_heuristic_as_good(gap, margin: float) -> str:
    """Healed, the heuristic is about as good: the paired 95% interval of deeper - last lies
    within +-margin (equivalence); does not hold when it excludes 0 with deeper better and
    reaches beyond the margin; cannot tell otherwise."""
    if -margin <= gap.low and gap.high <= margin:
        return "holds"
    if gap.low > 0 and gap.high > margin:
        return "does not hold"
    return "cannot tell"


def verdict_smooth_rise(removed: float, share: float) -> str:
    """Healing turns the C4-loss jump into a small rise: it removes at least ``share`` of the
    unhealed rise over the unpruned loss."""
    return "holds" if removed >= share else "does not hold"


def with_sensitivity(rule, value, threshold: float) -> str:
    """The verdict at the threshold, and at x0.75 and x1.25: "fragile" when they differ."""
    at = [rule(value, threshold * k) for k in (0.75, 1.0, 1.25)]
    tag = "" if len(set(at)) == 1 else " (fragile: " + " / ".join(at) + " at x0.75 / x1 / x1.25)"
    return f"**{at[1]}**{tag}"


def claims(df: pd.DataFrame, pair_rows: list[dict], margin=0.02, share=0.5) -> str:
    lines = [
        f"Rules: *as good* = the paired 95% interval of healed deeper_layers - last_layers (mean "
        f"accuracy of the five tasks) within +-{margin}; *smooth rise* = healing removes at "
        f"least {share:.0%} of the unhealed C4-loss rise. Each verdict also at x0.75 and x1.25 "
        'of its threshold ("fragile" where it flips).',
        "",
        "| model | healer | tokens | deeper - last (95% CI) | healed heuristic as good | "
        "C4 rise removed, deeper / last | smooth rise (deeper / last) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in pair_rows:
        if not row["compare"].endswith("deeper - last") or row["tokens"] == 0:
            continue
        model, healer = row["model"], row["compare"].split(":")[0]
        h = {v: k for k, v in NAMES.items()}[healer]
        d = row["d"]
        removed = []
        for method in ("deeper_layers", "last_layers"):
            m = df[(df["model"] == model) & (df["method"] == method)]
            base = df[(df["model"] == model) & (df["method"] == "none")]["c4/loss"].iloc[0]
            unhealed = m[m["healing"] == "none"]["c4/loss"]
            healed = m[(m["healing"] == h) & (m["tokens"] == row["tokens"])]["c4/loss"]
            if unhealed.empty or healed.empty:
                removed.append(float("nan"))
                continue
            removed.append(1 - (healed.iloc[0] - base) / (unhealed.iloc[0] - base))
        smooth = " / ".join(with_sensitivity(verdict_smooth_rise, x, share) for x in removed)
        lines.append(
            f"| {model} | {healer} | {row['tokens']:,} | {d.diff:+.3f} [{d.low:+.3f}, "
            f"{d.high:+.3f}] | {with_sensitivity(verdict_heuristic_as_good, d, margin)} | "
            f"{removed[0]:.0%} / {removed[1]:.0%} | {smooth} |"
        )
    return "\n".join(lines) + "\n"


# -- figures ----------------------------------------------------------------------------


def plot(df: pd.DataFrame, metric: str, path: Path, ylabel: str) -> None:
    models = model_order(df["model"])
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 3.9), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        part = df[df["model"] == model]
        base = part[part["method"] == "none"]
        ax.axhline(base[metric].iloc[0], color="black", lw=1, label="unpruned")
        for method in ("deeper_layers", "last_layers"):
            m = part[part["method"] == method]
            unhealed = m[m["healing"] == "none"]
            if not unhealed.empty:
                ax.axhline(
                    unhealed[metric].iloc[0],
                    color=color(method),
                    lw=0.8,
                    ls=(0, (1, 2)),
                    label=f"{method} unhealed",
                )
            for healer in ("lora", "kd", "partial"):
                arm = m[m["healing"] == healer].sort_values("tokens")
                if arm.empty:
                    continue
                ax.plot(
                    arm["tokens"],
                    arm[metric],
                    marker="o",
                    color=color(method),
                    ls=STYLE[healer],
                    label=f"{method} {NAMES[healer]}",
                )
                if metric == "retention":
                    ax.fill_between(
                        arm["tokens"],
                        arm["retention_low"],
                        arm["retention_high"],
                        color=color(method),
                        alpha=0.12,
                        lw=0,
                    )
        ax.set_xscale("log")
        ax.set_xlabel("healing tokens (log)")
        ax.set_ylabel(ylabel)
        ax.set_title(part["title"].iloc[0], fontsize=9)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=6.5)
    note = "bands: paired bootstrap 95% interval of the difference from the unpruned model"
    fig.text(0.01, 0.005, note if metric == "retention" else "", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=130)
    fig.savefig(path.with_suffix(".pdf"), metadata={"CreationDate": None})  # reproducible
    plt.close(fig)


def build(roots: list[Path], out: Path) -> pd.DataFrame:
    out.mkdir(parents=True, exist_ok=True)
    jobs = collect(roots)
    df = table(jobs)
    df.to_csv(out / "table.csv", index=False)
    cols = [
        "model",
        "method",
        "healing",
        "tokens",
        "epochs",
        "mean_acc",
        "mean_acc_se",
        "retention",
        "retention_low",
        "retention_high",
        "c4/loss",
        "wiki/ppl",
        "resumed_from",
        "heal_s",
        "tokens_per_s",
    ]
    shown = df[[c for c in cols if c in df]].sort_values(["model", "method", "healing", "tokens"])
    (out / "table.md").write_text(shown.to_markdown(index=False, floatfmt=".4f") + "\n")
    plot(df, "retention", out / "retention.png", "mean accuracy retention (5 tasks)")
    plot(df, "c4/loss", out / "c4_loss.png", "C4 loss (held-out)")
    rows = pairs(jobs)
    lines = [
        "| model | comparison | tokens | difference (95% CI) | p | p (Holm) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = r["d"]
        lines.append(
            f"| {r['model']} | {r['compare']} | {r['tokens']:,} | {d.diff:+.4f} "
            f"[{d.low:+.4f}, {d.high:+.4f}] | {d.p:.3g} | {r['p_holm']:.3g} (of {r['tests']}) |"
        )
    (out / "pairs.md").write_text(
        "Paired on the same items: B - A of the mean accuracy of the five tasks, a bootstrap "
        "95% interval (items resampled within each task, tasks weighed equally) and its "
        "two-sided p; Holm over the budgets of each comparison.\n\n" + "\n".join(lines) + "\n"
    )
    (out / "claims.md").write_text(claims(df, rows))
    return df


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m layerprune.studies.healing_budget")
    p.add_argument("roots", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    df = build(args.roots, args.out)
    print(df.to_markdown(index=False, floatfmt=".4f"))


if __name__ == "__main__":
    main()
