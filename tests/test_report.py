"""The report reads results.json files into one table and draws the curves."""

from __future__ import annotations

import json

from layerprune.report.cli import build_report


def fake_result(folder, method, fraction, acc):
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
    (folder / "results.json").write_text(json.dumps(result))


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
