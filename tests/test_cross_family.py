"""The cross-family report: its claims follow their stated rules on a hand-made table, and its
figures put the models side by side."""

from __future__ import annotations

import pytest
import torch

from layerprune.report.verdicts import judge, rule_text, thresholds
from layerprune.results import Results
from layerprune.scan.residual import Scan
from layerprune.studies.cross_family import (
    ACCURACIES,
    build_cross_family,
    claim_collapse,
    claim_deeper_most_similar,
    claim_finercut_attention,
    claim_finercut_beats_blocks,
    claim_healing_closes_gap,
    claim_healing_smooths_loss,
    claim_similarity_beats_heuristic,
    claims_table,
    job_items,
)

BLOCKS = 8
# (method, healing, fraction, accuracy of every task, C4 loss, removed attention / MLP ids)
ROWS = [
    ("none", "none", 0.0, 0.60, 3.0, None),
    ("deeper_layers", "none", 0.25, 0.58, 3.5, None),
    ("deeper_layers", "none", 0.5, 0.40, 6.0, None),
    ("deeper_layers", "none", 0.75, 0.26, 9.0, None),
    ("last_layers", "none", 0.25, 0.40, 4.0, None),
    ("last_layers", "none", 0.5, 0.30, 7.0, None),
    ("last_layers", "none", 0.75, 0.25, 9.5, None),
    ("deeper_layers", "lora", 0.25, 0.59, 3.2, None),
    ("deeper_layers", "lora", 0.5, 0.45, 3.6, None),
    ("last_layers", "lora", 0.25, 0.585, 3.4, None),
    ("last_layers", "lora", 0.5, 0.44, 3.9, None),
    ("finercut", "none", 0.25, 0.59, 3.1, ([5, 6, 7], [], [4])),  # block 4: both sublayers
]
SE = 0.01  # every task's lm-eval stderr: a seven-task mean has se sqrt(7) * 0.01 / 7 = 0.0038


def write_result(folder, model, method, healing, fraction, acc, loss, sublayers):
    n = round(fraction * BLOCKS)
    blocks = {"none": [], "last_layers": list(range(BLOCKS - 1 - n, BLOCKS - 1))}.get(
        method, list(range(n))
    )
    attention, mlp, blocks = sublayers or ([], [], blocks)
    removed = 10 * len(blocks) + len(attention) + 2 * len(mlp)  # of 100 parameters
    metrics = {"c4/loss": loss}
    for task in ACCURACIES:
        metrics |= {task: acc, f"{task}_stderr": SE, task.rsplit("/", 1)[0] + "/chance": 0.25}
    folder.mkdir(parents=True)
    result = {
        "config": {"model": {"name": model}, "healing": {"name": healing}, "experiment": "x"},
        "fraction": fraction,
        "plan": {
            "method": method,
            "metric": None,
            "num_candidates": 2 * BLOCKS if method == "finercut" else BLOCKS,  # sublayers
            "removed_blocks": blocks,
            "removed_attention": attention,
            "removed_mlp": mlp,
            "family": "sublayer" if method == "finercut" else "block",
        },
        "params": {"before": 100, "after": 100 - removed},
        "metrics": metrics,
        "timings": {"eval_s": 1.0},
    }
    Results(**result).write(folder / "results.json")


def deep_scan(slope: float = -0.1) -> Scan:
    """d(j, k) = (k - j) (1 + slope j): for every n the deepest block of n is the most similar
    (slope < 0), or the shallowest (slope > 0)."""
    d = torch.full((BLOCKS + 1, BLOCKS + 1), float("nan"), dtype=torch.float64)
    for j in range(BLOCKS + 1):
        for k in range(j + 1, BLOCKS + 1):
            d[j, k] = (k - j) * (1 + slope * j)
    return Scan(BLOCKS, {"angular/last": d, "cosine/mean": d}, 4, 64)


def report(tmp_path):
    for i, row in enumerate(ROWS):
        write_result(tmp_path / "runs" / f"a{i}", "a", *row)
    write_result(tmp_path / "runs" / "b0", "b", *ROWS[0])  # a second model, barely run
    write_result(tmp_path / "runs" / "b1", "b", *ROWS[1])
    write_result(tmp_path / "runs" / "c0", "c", *ROWS[0])  # only its unpruned point so far
    scans = {m: {"all 8 docs": deep_scan()} for m in "abc"}
    # BoolQ's items: 65% one answer, above every model's 0.60 (the others: no majority given)
    return build_cross_family([tmp_path / "runs"], tmp_path / "out", scans, {"boolq": 0.65})


def test_claims_follow_their_rules_on_a_hand_made_table(tmp_path):
    df = report(tmp_path)
    # mean accuracy gaps 0.18, 0.10, 0.01 (se 0.0053): two of three beyond 2 se
    assert claim_similarity_beats_heuristic(df, "a").startswith("**holds**: ")
    assert "0.25: +0.180 +- 0.005" in claim_similarity_beats_heuristic(df, "a")
    # healed gaps 0.005 and 0.010 < 2 se = 0.0107, while unhealed 0.18 was not
    assert claim_healing_closes_gap(df, "a").startswith("**holds**")
    # MMLU 0.60 vs chance 0.25: read from MMLU; kept (0.58 - 0.25) / 0.35 = 0.94 at 0.25 (a
    # plateau), 0.43 at 0.5, at chance (0.01 <= 2 x 0.01) from 0.75
    collapse = claim_collapse(df, "a")
    assert collapse.startswith("**holds**") and "0.25: 0.94, 0.5: 0.43, 0.75: 0.03" in collapse
    assert collapse.endswith("plateau up to 0.25, collapse (at chance) from 0.75")
    slide = df.copy()
    slide.loc[(slide["variant"] == "deeper_layers") & (slide["fraction"] == 0.25), "mmlu/acc"] = 0.4
    assert claim_collapse(slide, "a").startswith("**does not hold**")  # 0.43 at once: no plateau
    # rise 0.5 -> 0.2 (60% removed), 3.0 -> 0.6 (80%); last_layers 1.0 -> 0.4, 4.0 -> 0.9
    smooth = claim_healing_smooths_loss(df, "a")
    assert smooth.startswith("**holds**") and "0.5: +3.00 -> +0.60 (80.0% removed)" in smooth
    weak = df.copy()
    weak.loc[weak["variant"] == "last_layers + lora", "c4/loss"] += 0.5  # 10% removed at 0.25
    assert claim_healing_smooths_loss(weak, "a").startswith("**does not hold**")
    fc = claim_finercut_attention(df, "a")  # 4 attention, 1 MLP, mean block 5.5 / 7 = 0.79
    assert fc.startswith("**holds**") and "4 attention, 1 MLP of 8 blocks" in fc and "0.79" in fc
    few = df.copy()
    few.loc[few["variant"] == "finercut", "ids/mlp"] = "1,2"  # 4 attention vs 3 MLP: not 2x
    assert claim_finercut_attention(few, "a").startswith("**does not hold**: 4 attention, 3 MLP")
    # 13% of parameters: deeper_layers interpolated 0.60 - 0.02 x 13 / 20 = 0.587 vs 0.59
    # ... and against last_layers (0.60 - 0.20 x 13 / 20 = 0.470) far ahead: each method is
    # compared (Holm over 2 comparisons), not the best one picked afterwards
    beats = claim_finercut_beats_blocks(df, "a")
    assert beats.startswith("**cannot tell**: 2 comparisons") and "vs deeper_layers 0.587" in beats
    assert "0.590 vs last_layers 0.470 (+0.120" in beats
    ahead = df[~df["variant"].isin(["deeper_layers", "shortgpt"])]  # last_layers only
    assert claim_finercut_beats_blocks(ahead, "a").startswith("**holds**: 1 comparisons")
    deep = claim_deeper_most_similar({"all 8 docs": deep_scan()})
    assert deep.startswith("**holds**") and "l*(1..4) = [7, 6, 5, 4]" in deep
    for claim in (claim_healing_closes_gap, claim_finercut_attention):
        assert claim(df, "b") == "not run"  # a model with too few rows says so
    assert claim_collapse(df, "b").startswith("**cannot tell**: ")
    assert claim_collapse(df, "b").endswith("no collapse up to 0.25")
    # where both methods removed the same blocks they are one model: no evidence either way
    same = df.copy()
    for f in (0.25, 0.5, 0.75):
        for healed in ("", " + lora"):
            deeper = (same["fraction"] == f) & (same["variant"] == "deeper_layers" + healed)
            last = (same["fraction"] == f) & (same["variant"] == "last_layers" + healed)
            if deeper.any():
                same.loc[last, "ids/blocks"] = same.loc[deeper, "ids/blocks"].iloc[0]
    assert "(same blocks)" in claim_similarity_beats_heuristic(same, "a")
    assert claim_similarity_beats_heuristic(same, "a").startswith("**cannot tell**")
    assert claim_healing_closes_gap(same, "a").startswith("**cannot tell**")
    assert claim_healing_closes_gap(same, "a").endswith("one model)")


def test_verdicts_say_which_threshold_decides_them(tmp_path):
    df = report(tmp_path)
    assert thresholds(claim_finercut_attention) == {"ratio": 2.0, "depth": 0.5}
    # healing removes 60% / 80% (deeper_layers) and 60% / 77.5% (last_layers) of the rise:
    # holds at share 0.5 and 0.375, not at 0.625
    smooth = judge(claim_healing_smooths_loss, df, "a")
    assert smooth.startswith("**holds** (fragile: does not hold at share x1.25): unpruned C4")
    # gaps 0.18, 0.10, 0.01 with se 0.0053: two of three beyond 1.5, 2 and 2.5 se alike
    beats = judge(claim_similarity_beats_heuristic, df, "a")
    assert beats.startswith("**holds** (stable at x0.75 and x1.25): mean accuracy")
    # the centre of l*(n) in the last third: a scan whose l*(n) = 0 for every n is not deep
    shallow = judge(claim_deeper_most_similar, {"all": deep_scan(slope=0.1)})
    assert shallow.startswith("**does not hold** (stable") and "= [0, 0, 0, 0]" in shallow
    # 0.94 kept at 1/4: a plateau at 0.8 (and 0.6), none at 1.0
    assert judge(claim_collapse, df, "b") == claim_collapse(df, "b").replace(
        "**cannot tell**", "**cannot tell** (fragile: does not hold at plateau x1.25)"
    )
    assert judge(claim_healing_closes_gap, df, "b") == "not run"
    assert "Thresholds: ratio=2, depth=0.5." in rule_text(claim_finercut_attention)


def test_a_claim_resting_on_a_task_at_its_majority_rate_says_so(tmp_path):
    df = report(tmp_path)
    # last_layers scores as deeper_layers on every task but BoolQ, where it is 0.3 lower: the
    # seven-task gap (0.3 / 7 = 0.043, se 0.005) holds; without BoolQ there is none
    for f in (0.25, 0.5, 0.75):
        deeper = df[(df["variant"] == "deeper_layers") & (df["fraction"] == f)].iloc[0]
        last = (df["variant"] == "last_layers") & (df["fraction"] == f)
        for task in ACCURACIES:
            df.loc[last, task] = deeper[task] - (0.3 if task == "boolq/acc" else 0.0)
    table = claims_table(df, ["a"], {}, {"boolq": 0.65})
    row = next(line for line in table.splitlines() if line.startswith("| Unhealed, the sim"))
    assert "**cannot tell**" in row and row.endswith("(with every task: **holds**) |")
    assert "+0.000 +- 0.006" in row  # the six tasks read


def test_cross_family_figures_put_the_models_side_by_side(tmp_path):
    report(tmp_path)
    out = tmp_path / "out"
    for name in ("accuracy", "healing", "retention", "heatmaps", "removed_sublayers"):
        assert (out / f"{name}.png").stat().st_size > 1000 and (out / f"{name}.pdf").exists()
    claims = (out / "claims.md").read_text()
    assert claims.splitlines()[0] == "| claim | a | b | c |" and "Rules" in claims
    excluded = "6 of 7; excluded: boolq (0.600 vs floor 0.650)"
    assert (
        claims.splitlines()[2]
        == "| Tasks read (unpruned above chance and majority by > 2 stderr) | "
        + " | ".join([excluded] * 3)
        + " |"
    )
    assert claims.splitlines()[3].endswith(
        "| **holds** (stable at x0.75 and x1.25): all 8 docs: 4/4 n deep, l*(1..4) = [7, 6, 5, 4] |"
    )
    table = (out / "table.md").read_text()
    assert "mean_retention" in table and "finercut" in table


def test_gaps_between_jobs_with_per_item_results_are_paired(tmp_path):
    # deeper_layers answers the first 84 of 200 items of every task, last_layers the first 80:
    # a 0.02 gap. Unpaired (lm-eval stderr 0.035 a task) it is within 2 stderr; paired, the
    # two differ on 4 items a task only, so its stderr is sqrt(7 x 0.02 x 0.98 / 200) / 7
    n, se = 200, 0.035
    for name, method, fraction, right in (
        ("u", "none", 0.0, 120),
        ("d", "deeper_layers", 0.25, 84),
        ("l", "last_layers", 0.25, 80),
    ):
        blocks = {"none": [], "deeper_layers": [2, 3], "last_layers": [5, 6]}[method]
        metrics, items = {"c4/loss": 3.0}, {}
        for task in ACCURACIES:
            t, m = task.split("/")
            metrics |= {task: right / n, f"{task}_stderr": se, f"{t}/chance": 0.25}
            items[t] = {
                "doc": [f"{t}:{i}" for i in range(n)],
                m: [1.0 * (i < right) for i in range(n)],
            }
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        Results(
            config={"model": {"name": "a"}, "healing": {"name": "none"}, "experiment": "x"},
            fraction=fraction,
            plan={
                "method": method,
                "metric": None,
                "num_candidates": BLOCKS,
                "removed_blocks": blocks,
                "removed_attention": [],
                "removed_mlp": [],
            },
            params={"before": 100, "after": 100 - 10 * len(blocks)},
            metrics=metrics,
            timings={},
            items=items,
        ).write(folder / "results.json")
    df = build_cross_family([tmp_path / "runs"], tmp_path / "out", {}, {})
    text = claim_similarity_beats_heuristic(df, "a")
    assert text.startswith("**holds**") and "0.25: +0.020 +- 0.00" in text and "paired" in text
    se_paired = float(text.split("+- ")[1].split()[0])
    assert abs(se_paired - (7 * 0.02 * 0.98 / n) ** 0.5 / 7) < 0.001
    # the same jobs without their items: unpaired, 0.02 against 2 x 0.0187, cannot tell
    for name in ("d", "l"):
        path = tmp_path / "runs" / name / "results.json"
        r = Results.load(path)
        r.items = {}
        r.write(path)
    job_items.cache_clear()
    df = build_cross_family([tmp_path / "runs"], tmp_path / "out2", {}, {})
    text = claim_similarity_beats_heuristic(df, "a")
    assert text.startswith("**cannot tell**") and "+0.020 +- 0.019" in text
    assert "paired" not in text


def test_rescored_items_are_copied_only_into_the_same_model_scored_alike(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "add_items", Path(__file__).parents[1] / "experiments/cross_family/add_items.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    for store in ("store", "rescored"):
        for i, row in enumerate(ROWS[:3]):
            write_result(tmp_path / store / f"j{i}", "a", *row)
    items = {"arc_easy": {"doc": ["arc_easy:0"], "acc": [1.0]}}
    for i in range(3):
        path = tmp_path / "rescored" / f"j{i}" / "results.json"
        r = Results.load(path)
        r.items = items
        if i == 2:  # scored differently: one accuracy moved
            r.metrics["piqa/acc"] += 0.005
        r.write(path)
    copied, refused = mod.add_items(tmp_path / "rescored", tmp_path / "store")
    assert copied == 2 and len(refused) == 1 and "piqa/acc" in refused[0]
    stored = [Results.load(tmp_path / "store" / f"j{i}" / "results.json") for i in range(3)]
    assert [s.items for s in stored] == [items, items, {}]
    assert stored[0].metrics == Results.load(tmp_path / "rescored/j0/results.json").metrics

    # a second re-run on another task (BoolQ alone) adds its items beside the first's
    write_result(tmp_path / "boolq" / "j0", "a", *ROWS[0])
    path = tmp_path / "boolq" / "j0" / "results.json"
    r = Results.load(path)
    boolq = {"doc": ["boolq:0"], "acc": [0.0]}
    r.items = {"boolq": boolq, "arc_easy": {"doc": ["arc_easy:0"], "acc": [0.0]}}
    r.write(path)
    copied, refused = mod.add_items(tmp_path / "boolq", tmp_path / "store")
    assert copied == 1 and not refused
    stored = Results.load(tmp_path / "store" / "j0" / "results.json")
    assert stored.items == {**items, "boolq": boolq}  # arc_easy's items already there stay


def test_retention_has_a_band_and_the_floors_of_chance_and_a_constant_answer(tmp_path):
    df = report(tmp_path)  # every task: chance 0.25, stderr 0.01; BoolQ's majority 0.65
    row = df[(df["variant"] == "deeper_layers") & (df["fraction"] == 0.25)].iloc[0]
    # retention of each task is acc / 0.60; its stderr 0.01 / 0.60, seven tasks as independent
    assert row["mean_retention_stderr"] == pytest.approx(0.01 / 0.60 / 7**0.5)
    assert row["mean_retention/chance"] == pytest.approx(0.25 / 0.60)
    # answering BoolQ's majority answer keeps 0.65 / 0.60 of it; the six others at chance
    assert row["mean_retention/majority"] == pytest.approx((6 * 0.25 + 0.65) / 0.60 / 7)
