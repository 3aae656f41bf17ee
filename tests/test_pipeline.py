"""One job end to end: the CLI writes results.json with the stable keys and measured numbers."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from layerprune import pipeline
from layerprune.config import validate
from tests.conftest import compose, needs_assets

KEYS = {
    "config",
    "fraction",
    "plan",
    "params",
    "metrics",
    "timings",
    "checkpoint",
    "scan_cache",
    "versions",
}
PLAN_KEYS = {"method", "metric", "removed_blocks", "removed_attention", "removed_mlp", "scores"}


def test_tiny_job_without_benchmark(tmp_path):
    cfg = compose(["experiment=tiny_smoke", "seed=3"])
    results = pipeline.run(validate(cfg), OmegaConf.to_container(cfg), tmp_path).to_dict()
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert set(on_disk) >= KEYS and set(on_disk["plan"]) >= PLAN_KEYS
    assert on_disk["plan"]["removed_blocks"] == [5, 6]  # last_layers: 2 of 8, keep the last
    assert on_disk["params"]["before"] > on_disk["params"]["after"] > 0
    assert on_disk["metrics"] == {} and on_disk["config"]["seed"] == 3
    assert on_disk["scan_cache"] is None  # last_layers needs no scan
    assert on_disk["timings"]["load_s"] >= 0


@needs_assets("text")
def test_cli_tiny_perplexity(tmp_path):
    """The console script on a random tiny model: perplexity near the vocabulary size."""
    cmd = [
        str(Path(sys.executable).parent / "layerprune"),
        "model=tiny-mistral",
        "pruning_method=none",
        "benchmark=perplexity",
        "benchmark.perplexity.0.max_tokens=1024",
        "benchmark.perplexity.0.context_length=128",
        "benchmark.perplexity.0.stride=128",
        "speed=none",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = tmp_path.glob("outputs/*/*_tiny-mistral/results.json")
    res = json.loads(path.read_text())
    ppl = res["metrics"]["wiki/ppl"]
    assert res["metrics"]["wiki/tokens"] == 1024 - 8  # 8 windows of 128, first token unscored
    assert math.isclose(ppl, math.exp(res["metrics"]["wiki/loss"]), rel_tol=1e-9)
    assert 100 < ppl < 1000  # an untrained model: about uniform over 257 byte tokens
    assert res["config"]["model"]["name"] == "tiny-mistral"
    assert f"wiki/ppl = {ppl:.4f}" in proc.stdout
