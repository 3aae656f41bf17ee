"""Copy per-item results from rescored jobs into the stored cross-family jobs they repeat.

    python experiments/cross_family/add_items.py RESCORED_RUNS [--store experiments/cross_family/runs]

The stored jobs predate per-item logging, so the claims compare them unpaired. A job re-run
into another store (same experiment and model, ``speed=none``) logs its items; it repeats a
stored job when model, method, fraction, the removed blocks / attention / MLP and the healing
agree. Its items are copied only when every accuracy the two share agrees to 1e-9 (the same
model scored on the same items the same way), so no stored number changes, only its items.
A re-run may score fewer tasks (the claims pair only the tasks both jobs have items for; a
task without items leaves that comparison unpaired).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from layerprune.results import Results

TOLERANCE = 1e-9


def key(r: Results) -> tuple:
    """What makes two jobs the same model on the same items."""
    plan, healing = r.plan, r.healing or {}
    return (
        r.config["model"]["name"],
        r.config.get("benchmark", {}).get("name"),
        plan["method"],
        round(r.fraction, 6),
        *(tuple(plan[f"removed_{k}"]) for k in ("blocks", "attention", "mlp")),
        healing.get("method", "none"),
        healing.get("tokens", 0),
    )


def accuracies(r: Results) -> dict[str, float]:
    return {k: v for k, v in r.metrics.items() if k.endswith(("/acc", "/acc_norm"))}


def add_items(rescored: Path, store: Path) -> tuple[int, list[str]]:
    """Copy items job by job, task by task (a job already holding a task's items keeps them;
    re-runs on different task sets, e.g. the five 0-shot tasks and then BoolQ, add up);
    returns how many stored jobs gained items and what was refused, and why."""
    new: dict[tuple, list[Results]] = {}
    for r in map(Results.load, sorted(rescored.rglob("results.json"))):
        if r.items:
            new.setdefault(key(r), []).append(r)
    copied, refused = 0, []
    for path in sorted(store.rglob("results.json")):
        old = Results.load(path)
        gained = False
        for match in new.get(key(old), []):
            tasks = {t: v for t, v in match.items.items() if t not in old.items}
            if not tasks:
                continue
            a, b = accuracies(old), accuracies(match)
            off = {k: (a[k], b[k]) for k in a if k in b and abs(a[k] - b[k]) > TOLERANCE}
            if off or not set(a) & set(b):
                refused.append(f"{path.parent.name} {key(old)[:4]}: {off}")
                continue
            old.items = {**old.items, **tasks}
            gained = True
        if gained:
            old.write(path)
            copied += 1
    return copied, refused


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("rescored", type=Path, help="a run store of re-run jobs")
    p.add_argument("--store", type=Path, default=Path("experiments/cross_family/runs"))
    args = p.parse_args()
    copied, refused = add_items(args.rescored, args.store)
    print(f"items copied into {copied} stored jobs")
    for line in refused:
        print("refused (accuracies differ):", line)


if __name__ == "__main__":
    main()
