"""The report reads results.json files into one table and draws the curves."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from layerprune.errors import LayerpruneError
from layerprune.report.cli import build_report
from layerprune.results import SCHEMA_VERSION, Results
from tests.conftest import needs_assets


def fake_result(folder, method, fraction, acc, version=SCHEMA_VERSION):
    folder.mkdir(parents=True)
    result = {
        "config": {"model": {"name": "m"}, "healing": {"name": "none"}, "experiment": None},
        "fraction": fraction,
        "plan": {
            "method": method,
            "metric": None,
            "num_candidates": 10,
            "removed_blocks": list(range(round(fraction * 10))),
            "removed_attention": [],
            "removed_mlp": [],
        },
        "params": {"before": 100, "after": 100 - 10 * round(fraction * 10)},
        "metrics": {"arc_easy/acc": acc, "arc_easy/chance": 0.25},
        "timings": {"eval_s": 1.0},
    }
    if version == 1:  # what layerprune wrote before the schema had a version
        result["model_identity"] = "asset:m:0"
        (folder / "results.json").write_text(json.dumps(result))
    else:
        Results(**result).write(folder / "results.json")


def test_an_old_results_file_names_its_version_and_upgrades(tmp_path):
    from layerprune.results import main as results_main

    fake_result(tmp_path / "runs" / "0", "none", 0.0, 0.6, version=1)
    path = tmp_path / "runs" / "0" / "results.json"
    with pytest.raises(LayerpruneError, match="schema version 1; .* upgrade it with"):
        Results.load(path)
    results_main(["upgrade", str(tmp_path / "runs")])
    r = Results.load(path)
    assert r.schema_version == SCHEMA_VERSION and r.plan["family"] == "block"
    assert r.model == {"name": "m", "title": "m", "identity": "asset:m:0"}
    assert r.metrics == {"arc_easy/acc": 0.6, "arc_easy/chance": 0.25}


def test_report_table_and_curves(tmp_path):
    fake_result(tmp_path / "runs" / "0", "none", 0.0, 0.6)
    fake_result(tmp_path / "runs" / "1", "last_layers", 0.2, 0.5)
    fake_result(tmp_path / "runs" / "2", "last_layers", 0.4, 0.3)
    table = build_report([tmp_path / "runs"], tmp_path / "out", ["arc_easy/acc"])
    assert len(table) == 3
    assert table.set_index("fraction")["params_ratio"].to_dict() == {0.0: 1.0, 0.2: 0.8, 0.4: 0.6}
    assert (tmp_path / "out" / "curves.png").stat().st_size > 1000
    assert "last_layers" in (tmp_path / "out" / "table.md").read_text()


def test_report_variants_query_and_params_axis(tmp_path):
    fake_result(tmp_path / "runs" / "0", "none", 0.0, 0.6)
    fake_result(tmp_path / "runs" / "1", "last_layers", 0.2, 0.5)
    fake_result(tmp_path / "runs" / "2", "shortgpt", 0.2, 0.4)
    table = build_report(
        [tmp_path / "runs", tmp_path / "runs" / "1"],
        tmp_path / "out",
        ["arc_easy/acc"],
        query="method != 'shortgpt'",
        x="params_removed",
    )
    assert sorted(table["method"]) == ["last_layers", "none"]  # filtered, and no duplicate row
    # one pruned fraction left: an ablation bar chart instead of curves
    assert (tmp_path / "out" / "ablation.png").exists() and (
        tmp_path / "out" / "ablation.pdf"
    ).exists()
    assert (tmp_path / "out" / "all.parquet").exists()


def test_figures_are_copied_with_safe_names(tmp_path):
    fake_result(tmp_path / "runs" / "0", "none", 0.0, 0.6)
    fake_result(tmp_path / "runs" / "1", "deeper_layers", 0.2, 0.5)
    fake_result(tmp_path / "runs" / "2", "deeper_layers", 0.4, 0.4)
    for i in ("1", "2"):
        result = tmp_path / "runs" / i / "results.json"
        data = json.loads(result.read_text())
        data["plan"]["metric"] = "angular/last"  # a "/" in the variant name
        data["config"]["healing"]["name"] = "lora" if i == "2" else "none"
        result.write_text(json.dumps(data))
        (tmp_path / "runs" / i / "distance_heatmap.png").write_bytes(b"png")
    build_report([tmp_path / "runs"], tmp_path / "out", ["arc_easy/acc"])
    copies = sorted(p.name for p in (tmp_path / "out" / "figures").iterdir())
    assert len(copies) == 2 and all("/" not in c for c in copies)


def test_an_earlier_reports_rows_extend_with_new_jobs(tmp_path):
    """``all.parquet`` of a committed report is a root: new jobs join its rows, none rerun."""
    fake_result(tmp_path / "old" / "0", "none", 0.0, 0.6)
    fake_result(tmp_path / "old" / "1", "last_layers", 0.2, 0.5)
    build_report([tmp_path / "old"], tmp_path / "first", ["arc_easy/acc"])
    fake_result(tmp_path / "new" / "0", "shortgpt", 0.2, 0.4)
    table = build_report(
        [tmp_path / "first" / "all.parquet", tmp_path / "new"], tmp_path / "out", ["arc_easy/acc"]
    )
    got = {m: a for m, a in zip(table["method"], table["arc_easy/acc"], strict=True)}
    assert got == {"none": 0.6, "last_layers": 0.5, "shortgpt": 0.4}


def test_retention_is_metric_over_the_same_models_unpruned_value():
    import pandas as pd

    from layerprune.report.cli import add_retention

    df = pd.DataFrame(
        {
            "model": ["a", "a", "b", "b"],
            "healing": ["none"] * 4,
            "removed_blocks": [0, 3, 0, 3],
            "removed_attention": [0] * 4,
            "removed_mlp": [0] * 4,
            "arc_easy/acc": [0.8, 0.6, 0.5, 0.25],
            "piqa/acc": [0.7, 0.35, 0.6, 0.6],
            "c4/loss": [3.0, 6.0, 4.0, 5.0],
        }
    )
    out = add_retention(df, ["arc_easy/acc", "piqa/acc", "c4/loss"])
    assert list(out["arc_easy/acc/retention"]) == pytest.approx([1.0, 0.75, 1.0, 0.5])
    assert list(out["c4/loss/retention"]) == pytest.approx([1.0, 2.0, 1.0, 1.25])
    assert list(out["mean_retention"]) == pytest.approx([1.0, (0.75 + 0.5) / 2, 1.0, 0.75])


def test_curves_and_bars_draw_lm_eval_stderr(tmp_path, monkeypatch):
    import matplotlib.axes
    import numpy as np

    bands, bars = [], []
    fill, bar = matplotlib.axes.Axes.fill_between, matplotlib.axes.Axes.bar
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "fill_between",
        lambda ax, x, lo, hi, **k: bands.append((list(lo), list(hi))) or fill(ax, x, lo, hi, **k),
    )
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "bar",
        lambda ax, x, h, **k: bars.append(list(k.get("yerr"))) or bar(ax, x, h, **k),
    )
    for i, (fraction, acc) in enumerate([(0.0, 0.6), (0.2, 0.5), (0.4, 0.3)]):
        fake_result(tmp_path / "runs" / str(i), "none" if i == 0 else "last_layers", fraction, acc)
    for path in (tmp_path / "runs").rglob("results.json"):  # lm-eval's stderr beside each acc
        r = json.loads(path.read_text())
        r["metrics"]["arc_easy/acc_stderr"] = 0.05
        path.write_text(json.dumps(r))
    build_report([tmp_path / "runs"], tmp_path / "out", ["arc_easy/acc"])
    assert bands and np.allclose(bands[0], [[0.55, 0.45, 0.25], [0.65, 0.55, 0.35]])  # acc -+ se
    assert (tmp_path / "out" / "retention.png").exists()
    build_report(
        [tmp_path / "runs" / "0", tmp_path / "runs" / "1"], tmp_path / "bars", ["arc_easy/acc"]
    )
    assert bars == [[0.05]]


@needs_assets("text")
def test_calibration_size_study_runs_on_a_tiny_model(tmp_path, monkeypatch):
    from layerprune import paths
    from layerprune.models.load import load_model
    from layerprune.studies.calibration_size import CRITERIA, calibration_study, plot_agreement
    from tests.conftest import tiny_config

    monkeypatch.setattr(paths, "scan_cache_dir", lambda: tmp_path / "scans")
    lm = load_model(tiny_config("llama", layers=6))
    df = calibration_study(lm, sizes=(2, 8), seeds=(0, 1), seq_len=16)
    assert set(df["criterion"]) == set(CRITERIA)
    assert len(df) == 3 * (1 + 2 * 2)  # all documents, then 2 sizes x 2 seeds
    full = df[df["documents"] == df["all_documents"]]
    assert (full["agreement"] == 1.0).all() and df["agreement"].between(0, 1).all()
    plot_agreement(df, tmp_path / "agreement.png")
    assert (tmp_path / "agreement.png").stat().st_size > 1000


def test_pareto_front_keeps_the_points_nothing_beats_on_both_axes():
    import pandas as pd

    from layerprune.report.speed_figures import pareto

    pts = pd.DataFrame({"x": [1.1, 1.3, 1.2, 1.6, 1.5], "y": [0.9, 0.8, 0.7, 0.5, 0.4]})
    # (1.2, 0.7) is beaten by (1.3, 0.8), (1.5, 0.4) by (1.6, 0.5)
    assert pareto(pts, "x", "y")[["x", "y"]].values.tolist() == [
        [1.1, 0.9],
        [1.3, 0.8],
        [1.6, 0.5],
    ]


def test_stored_speed_blocks_become_columns_and_figures(tmp_path):
    fake_result(tmp_path / "runs" / "0", "none", 0.0, 0.6)
    for i, (fraction, acc, decode) in enumerate([(0.2, 0.5, 1.2), (0.4, 0.3, 1.5)], 1):
        fake_result(tmp_path / "runs" / str(i), "last_layers", fraction, acc)
        path = tmp_path / "runs" / str(i) / "results.json"
        r = Results.load(path)
        r.speed = {
            "ratios": {
                "decode_b1_tokens_per_s": decode,
                "decode_b8_tokens_per_s": decode + 0.1,
                "prefill_b1_tokens_per_s": decode,
                "kv_bytes_per_token": 1 - fraction,
            },
            "ideal": {"prefill": decode + 0.05, "decode_b1": decode, "decode_b8": decode + 0.2},
            "pruned": {"decode_b1_round_spread": 0.02, "prefill_b1_round_spread": 0.01 * i},
            "unpruned": {"decode_b1_round_spread": 0.3 * (i - 1)},
        }
        r.write(path)
    table = build_report([tmp_path / "runs"], tmp_path / "out", ["arc_easy/acc"])
    row = table.set_index("fraction").loc[0.4]
    assert row["speed/decode_b8_tokens_per_s"] == 1.6 and row["speed/kv_bytes_per_token"] == 0.6
    # the worst disagreement between rounds, either model: 0.3 at 0.4 (noisy), 0.02 at 0.2
    assert row["speed/round_spread"] == pytest.approx(0.3)
    assert table.set_index("fraction").loc[0.2]["speed/round_spread"] == pytest.approx(0.02)
    assert "speed/decode_b1_tokens_per_s" in (tmp_path / "out" / "table.md").read_text()
    for name in ("speed.png", "speed_vs_ideal.png"):
        assert (tmp_path / "out" / name).stat().st_size > 1000


def test_curves_are_a_grid_in_the_project_colours_with_baselines_and_a_caption(
    tmp_path, monkeypatch
):
    import matplotlib.figure
    import pandas as pd

    from layerprune.report import style
    from layerprune.report.curves import plot_curves

    figures = []
    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(
        matplotlib.figure.Figure,
        "savefig",
        lambda fig, *a, **k: figures.append(fig) or save(fig, *a, **k),
    )
    tasks = [f"t{i}" for i in range(8)]
    rows = []
    for variant in ("last_layers", "shortgpt", "last_layers + lora"):
        for fraction, acc in ((0.0, 0.6), (0.25, 0.5), (0.5, 0.3)):
            row = {"variant": variant, "fraction": fraction, "params_ratio": 1 - fraction}
            for t in tasks:
                row |= {f"{t}/acc": acc, f"{t}/acc_stderr": 0.02, f"{t}/chance": 0.25}
            row["t1/majority"] = 0.63  # only t1 has a majority-class rate
            rows.append(row)
    df = pd.DataFrame(rows)
    plot_curves(df, [f"{t}/acc" for t in tasks], tmp_path / "c.png", by="variant")
    fig = figures[-1]
    shown = [ax for ax in fig.axes if ax.get_visible()]
    grid = {
        (ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start) for ax in shown
    }
    assert len(shown) == 8 and grid == {(r, c) for r in range(2) for c in range(4)}  # 2 x 4
    width, height = fig.get_size_inches()
    assert width / height < 3  # was 8 x 1 panels: 4032 x 432 px
    lines = {ln.get_label(): ln for ln in shown[0].get_lines()}
    assert lines["last_layers"].get_color() == style.color("last_layers")
    assert lines["last_layers + lora"].get_color() == style.color("last_layers")
    assert lines["last_layers + lora"].get_linestyle() == "--"
    assert lines["shortgpt"].get_color() == style.color("shortgpt")
    labels = [[ln.get_label() for ln in ax.get_lines()] for ax in shown]
    assert all("chance" in ls for ls in labels)
    assert ["majority" in ls for ls in labels] == [i == 1 for i in range(8)]
    (majority,) = [ln for ln in shown[1].get_lines() if ln.get_label() == "majority"]
    assert majority.get_linestyle() == ":" and list(majority.get_ydata()) == [0.63, 0.63]
    caption = " ".join(t.get_text() for t in fig.texts).replace("\n", " ")
    assert style.BAND in caption and "majority" in caption and "chance" in caption

    # per model: each model its own row(s), in the papers' order, titled with what the model
    # is (its conf/model title), not its config name; 4 metrics fit one row
    both = pd.concat([df.assign(model="qwen2.5-0.5b"), df.assign(model="smollm2-135m")])
    plot_curves(both, [f"{t}/acc" for t in tasks[:4]], tmp_path / "m.png", "variant", rows="model")
    shown = [ax for ax in figures[-1].axes if ax.get_visible()]
    assert len(shown) == 8 and [ax.get_title() for ax in shown[::4]] == [
        "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised)",
        "Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF, dequantised)",
    ]


def test_pairs_table_is_pruned_minus_unpruned_item_by_item(tmp_path):
    """pairs.md: each pruned job against its unpruned model on the same items, McNemar's
    exact p per task and Holm over the model's tests; jobs without items get no row."""
    from scipy.stats import binomtest

    from layerprune.stats import holm

    def with_items(folder, correct: dict[str, list[int]]):
        path = folder / "results.json"
        r = Results.load(path)
        r.items = {
            task: {
                "doc": [f"{task}:{i}" for i in range(len(c))],
                "target": [0] * len(c),
                "pred": [0 if x else 1 for x in c],
                "acc": [float(x) for x in c],
            }
            for task, c in correct.items()
        }
        r.metrics |= {f"{task}/acc": sum(c) / len(c) for task, c in correct.items()}
        r.write(path)

    runs = tmp_path / "runs"
    fake_result(runs / "0", "none", 0.0, 0.6)
    fake_result(runs / "1", "last_layers", 0.2, 0.5)
    fake_result(runs / "2", "last_layers", 0.4, 0.3)  # no items: no row
    base = [1] * 12 + [0] * 8
    pruned = [0] * 9 + [1] * 3 + [0] * 6 + [1] * 2  # 9 lost, 2 gained
    with_items(runs / "0", {"arc_easy": base, "piqa": base})
    with_items(runs / "1", {"arc_easy": pruned, "piqa": base})
    build_report([runs], tmp_path / "out", ["arc_easy/acc", "piqa/acc"])
    pairs = pd.read_csv(tmp_path / "out" / "pairs.csv")
    assert set(pairs["fraction"]) == {0.2}
    rows = pairs.set_index("task")
    arc = rows.loc["arc_easy/acc"]
    assert arc["n"] == 20 and arc["diff"] == pytest.approx((2 - 9) / 20)
    p_arc = binomtest(2, 11, 0.5).pvalue
    assert arc["p"] == pytest.approx(p_arc)
    assert rows.loc["piqa/acc", "diff"] == 0 and rows.loc["piqa/acc", "p"] == 1
    assert list(rows.loc[["arc_easy/acc", "piqa/acc"], "p_holm"]) == pytest.approx(holm([p_arc, 1]))
    assert (rows.loc[["arc_easy/acc", "piqa/acc"], "tests"] == 2).all()
    assert rows.loc["mean", "diff"] == pytest.approx(-7 / 40)
    assert rows.loc["mean", "low"] < rows.loc["mean", "diff"] < rows.loc["mean", "high"]
    assert "McNemar" in (tmp_path / "out" / "pairs.md").read_text()
    # every job with items: its most common answer's share, flagged as a constant at >= 95%
    fake_result(runs / "3", "last_layers", 0.6, 0.5)
    with_items(runs / "3", {"arc_easy": [1] * 19 + [0], "piqa": [1] * 17 + [0] * 3})
    build_report([runs], tmp_path / "out", ["arc_easy/acc", "piqa/acc"])
    df = pd.read_parquet(tmp_path / "out" / "all.parquet").set_index("job")
    assert df.loc["0", "arc_easy/top_share"] == pytest.approx(0.6)
    assert df.loc["3", "arc_easy/top_share"] == pytest.approx(0.95)
    assert df.loc["3", "arc_easy/constant"] == "0" and pd.isna(df.loc["3", "piqa/constant"])
    assert pd.isna(df.loc["0", "arc_easy/constant"])
    table = pd.read_csv(tmp_path / "out" / "table.csv", keep_default_na=False)
    assert sorted(table["constant_on"]) == ["", "", "", "arc_easy=0"]
