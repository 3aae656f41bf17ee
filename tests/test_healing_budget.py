"""The healing-budget study on hand-made jobs: retention and its paired interval, KD vs CE
paired on the same items, and the claims' verdicts follow their stated rules."""

from __future__ import annotations

import numpy as np
import pytest

from layerprune.results import Results
from layerprune.studies.healing_budget import TASKS, build

N = 200  # items per task


def job(method: str, healer: str, tokens: int, right: int, loss: float) -> Results:
    """A job whose first ``right`` items of every task are correct (1.0), the rest wrong."""
    hits = [1.0] * right + [0.0] * (N - right)
    items = {t: {"doc": list(range(N)), m: hits} for t, m in TASKS.items()}
    acc = right / N
    metrics = {"c4/loss": loss, "wiki/ppl": float(np.exp(loss))}
    for t, m in TASKS.items():
        metrics |= {f"{t}/{m}": acc, f"{t}/{m}_stderr": 0.01}
    healing = None if healer == "none" else {"method": healer, "tokens": tokens, "epochs": 1.0}
    return Results(
        config={"experiment": "healing_budget", "model": {"name": "m"}},
        fraction=0.0 if method == "none" else 0.25,
        plan={"method": method},
        params={},
        metrics=metrics,
        timings={},
        healing=healing,
        items=items,
    )


JOBS = [
    ("none", "none", 0, 120, 3.0),
    ("deeper_layers", "none", 0, 80, 6.0),
    ("last_layers", "none", 0, 80, 9.0),
    ("deeper_layers", "lora", 1000, 100, 4.0),
    ("deeper_layers", "kd", 1000, 110, 3.9),
    ("last_layers", "lora", 1000, 100, 4.0),
    ("last_layers", "kd", 1000, 90, 8.5),
]


@pytest.fixture
def study(tmp_path):
    for i, row in enumerate(JOBS):
        (tmp_path / "runs" / str(i)).mkdir(parents=True)
        job(*row).write(tmp_path / "runs" / str(i) / "results.json")
    df = build([tmp_path / "runs"], tmp_path / "out")
    return df, tmp_path / "out"


def test_retention_is_accuracy_over_the_unpruned_models_with_a_paired_interval(study):
    df, out = study
    row = df[(df.method == "deeper_layers") & (df.healing == "kd")].iloc[0]
    assert row.retention == pytest.approx(110 / 120)
    # every item the pruned job gets right the unpruned one does too: the paired difference
    # is 10 of 200 items lost in each task, and its interval lies below 0
    assert row.retention_high < 1 and row.retention_low < row.retention < row.retention_high
    for name in ("table.md", "table.csv", "retention.png", "c4_loss.png", "pairs.md"):
        assert (out / name).stat().st_size > 0


def test_kd_vs_ce_and_the_claims_follow_their_rules(study):
    _, out = study
    pairs = (out / "pairs.md").read_text()
    assert "| m | deeper_layers: KD - CE | 1,000 | +0.0500" in pairs  # 110 - 100 of 200 items
    assert "| m | last_layers: KD - CE | 1,000 | -0.0500" in pairs
    claims = (out / "claims.md").read_text()
    # CE-LoRA: deeper and last both at 100 right: a zero difference with a zero-width interval
    ce = next(line for line in claims.splitlines() if "| CE-LoRA | 1,000 |" in line)
    assert "+0.000 [+0.000, +0.000] | **holds**" in ce
    # C4 rise removed: deeper (6 -> 4 over 3) = 2/3, last (9 -> 4 over 3) = 5/6
    assert "67% / 83%" in ce
    kd = next(line for line in claims.splitlines() if "| KD-LoRA | 1,000 |" in line)
    assert "+0.100" in kd and "**does not hold**" in kd  # deeper 110 vs last 90 right
    # C4 rise removed: deeper 1 - (3.9 - 3) / (6 - 3) = 70%, last 1 - (8.5 - 3) / (9 - 3) = 8%
    assert "70% / 8%" in kd and kd.count("**does not hold**") == 2


def test_healed_minus_unhealed_is_paired_per_arm(study):
    _, out = study
    pairs = (out / "pairs.md").read_text()
    # deeper_layers: 80 right unhealed, 100 (CE) and 110 (KD) healed, on the same items
    assert "| m | deeper_layers: CE-LoRA - unhealed | 1,000 | +0.1000" in pairs
    assert "| m | deeper_layers: KD-LoRA - unhealed | 1,000 | +0.1500" in pairs
    assert "| m | last_layers: KD-LoRA - unhealed | 1,000 | +0.0500" in pairs
