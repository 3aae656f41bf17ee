"""Block selection rules, real surgery, checkpoints that vanilla transformers loads exactly."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from layerprune import paths, pipeline
from layerprune.config import MetricConfig, validate
from layerprune.errors import LayerpruneError
from layerprune.methods.base import MethodContext
from layerprune.methods.blocks import DeeperLayers, LastLayers, ShortGPT, count_to_remove
from layerprune.models.load import count_parameters, load_model
from layerprune.scan.residual import Scan
from layerprune.surgery.blocks import PLAN_FILE, remove_blocks, save_checkpoint
from tests.conftest import (
    FAMILIES,
    assert_cache_matches_no_cache,
    compose,
    needs_assets,
    tiny_config,
)


def fake_scan(num_blocks: int = 6) -> Scan:
    """A scan whose d(l, n) and BI are chosen by hand."""
    size = num_blocks + 1
    d = torch.full((size, size), float("nan"), dtype=torch.float64)
    for j in range(size):
        for k in range(j + 1, size):
            d[j, k] = (k - j) * 0.1 + (0.0 if j == 2 else 0.05)  # blocks starting at 2 closest
    cos = torch.full((size, size), float("nan"), dtype=torch.float64)
    bi = [0.5, 0.1, 0.4, 0.05, 0.3, 0.2]
    for i in range(num_blocks):
        cos[i, i + 1] = bi[i]
    return Scan(num_blocks, {"angular/last": d, "cosine/mean": cos}, 4, 40)


def select(method, fraction: float, num_blocks: int, scan=None, metric="angular", reduction="last"):
    """``method``'s plan for a model of ``num_blocks`` blocks (no model needed)."""
    count = method.count(fraction, num_blocks)
    m = MetricConfig(metric, reduction)
    ctx = MethodContext(None, fraction, count, num_blocks, m, None, tmp_dir(), "m", scan=scan)
    return method.plan(ctx)


def tmp_dir():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp(prefix="layerprune-plan-"))


def test_count_to_remove_rounds_half_up_and_keeps_one():
    assert count_to_remove(0.25, 30) == 8  # 7.5 -> 8 (round() would give 8 too)
    assert count_to_remove(0.25, 10) == 3  # 2.5 -> 3 (round() would give 2)
    assert count_to_remove(0.0, 30) == 0
    with pytest.raises(LayerpruneError, match="at least one must remain"):
        count_to_remove(0.99, 30)


def test_methods_choose_by_their_rule():
    scan = fake_scan()
    deeper = select(DeeperLayers(), 0.5, 6, scan, "angular", "last")
    assert deeper.removed_blocks == [2, 3, 4] and deeper.scores["l_star"] == 2
    assert len(deeper.scores["d(l,n)"]) == 4  # l = 0..L-n
    assert select(LastLayers(), 0.5, 6).removed_blocks == [2, 3, 4]
    assert select(LastLayers(), 0.2, 6).removed_blocks == [4]
    assert select(ShortGPT(), 0.34, 6, scan).removed_blocks == [1, 3]
    empty = select(DeeperLayers(), 0.05, 6, scan, "angular", "last")
    assert empty.is_empty and "n = 0" in empty.note
    with pytest.raises(LayerpruneError, match="use pruning_method=shortgpt"):
        DeeperLayers().check_metric("block_influence")


@pytest.mark.parametrize("family", FAMILIES + ["gemma3_text"])
def test_prune_save_load_generate(family, tmp_path):
    lm = load_model(tiny_config(family))
    before = count_parameters(lm.model)
    block_params = sum(p.numel() for p in lm.adapter.blocks(lm.model)[3].parameters())
    plan = select(LastLayers(), 0.375, 8)  # blocks 4, 5, 6
    remove_blocks(lm.model, lm.adapter, plan.removed_blocks)
    assert count_parameters(lm.model) == before - 3 * block_params
    folder = save_checkpoint(lm.model, lm.tokenizer, plan, tmp_path / "ckpt")
    assert json.loads((folder / PLAN_FILE).read_text())["removed_blocks"] == [4, 5, 6]
    again = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert again.config.num_hidden_layers == 5 and len(again.model.layers) == 5
    types = getattr(again.config, "layer_types", None)
    assert types is None or len(types) == 5
    ids = torch.randint(0, 256, (2, 11))
    with torch.no_grad():
        assert torch.equal(lm.model(ids).logits, again(ids).logits)
    prompt = ids[:1, :6]
    assert_cache_matches_no_cache(again, prompt, 12)


@needs_assets("text")
def test_sweep_second_job_hits_the_scan_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "scan_cache_dir", lambda: tmp_path / "scans")
    base = [
        "model=tiny-llama",
        "pruning_method=deeper_layers",
        "benchmark=none",
        "calibration.num_sequences=6",
        "calibration.seq_len=64",
        "save_checkpoint=true",
    ]
    first = compose(base + ["fraction=0.25"])
    r1 = pipeline.run(validate(first), OmegaConf.to_container(first), tmp_path / "a").to_dict()
    assert r1["scan_cache"] == "miss" and (tmp_path / "a" / "distance_heatmap.png").exists()

    import layerprune.scan.run as scan_run

    def no_forward(*a, **k):
        raise AssertionError("a cache hit must not run the model")

    monkeypatch.setattr(scan_run, "scan_model", no_forward)
    second = compose(base + ["fraction=0.5", "metric=cosine"])
    r2 = pipeline.run(validate(second), OmegaConf.to_container(second), tmp_path / "b").to_dict()
    assert r2["scan_cache"] == "hit"
    assert len(r2["plan"]["removed_blocks"]) == 4 and len(r1["plan"]["removed_blocks"]) == 2
    assert r2["params"]["after"] < r1["params"]["after"] < r1["params"]["before"]
    saved = AutoModelForCausalLM.from_pretrained(r2["checkpoint"])
    assert saved.config.num_hidden_layers == 4


@pytest.mark.real
def test_smollm2_block_pruning_roundtrip(smollm2, tmp_path):
    import copy

    model = copy.deepcopy(smollm2.model)
    plan = select(LastLayers(), 0.2, 30)  # 6 blocks: 23..28
    remove_blocks(model, smollm2.adapter, plan.removed_blocks)
    folder = save_checkpoint(model, smollm2.tokenizer, plan, tmp_path / "ckpt")
    again = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert again.config.num_hidden_layers == 24
    ids = smollm2.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)
    assert_cache_matches_no_cache(again, ids, 8)
