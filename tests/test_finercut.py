"""FinerCut: hand-computed divergences, naive == fast, sublayer checkpoints that load back."""

from __future__ import annotations

import json
import math

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from layerprune import paths, pipeline
from layerprune.config import ModelConfig, validate
from layerprune.methods.discrepancy import discrepancy_sum
from layerprune.methods.search import FastEvaluator, NaiveEvaluator, candidates, greedy_order
from layerprune.models.load import count_parameters, load_model
from layerprune.plan import PruningPlan
from layerprune.surgery.sublayers import prune_sublayers, save_sublayer_checkpoint
from tests.conftest import (
    FAMILIES,
    assert_cache_matches_no_cache,
    compose,
    needs_assets,
    tiny_config,
)


def test_divergences_by_hand():
    p, q = [0.5, 0.5], [0.9, 0.1]
    logp = torch.log(torch.tensor([[p]], dtype=torch.float64))  # float64 in, float64 arithmetic
    logits_q = torch.log(torch.tensor([[q]], dtype=torch.float64))  # softmax(log q) = q
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    kl = lambda a, b: sum(x * math.log(x / y) for x, y in zip(a, b, strict=True))  # noqa: E731
    assert discrepancy_sum("kl", logp, logits_q) == pytest.approx(kl(p, q))
    assert discrepancy_sum("js", logp, logits_q) == pytest.approx(0.5 * kl(p, m) + 0.5 * kl(q, m))
    code = (0.5 * kl(m, p) + 0.5 * kl(m, q)) / 2  # the official code, / vocabulary size 2
    assert discrepancy_sum("js_code", logp, logits_q) == pytest.approx(code)
    a, b = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[1.0, 1.0]]])
    assert discrepancy_sum("angular", a, b) == pytest.approx(0.25)
    assert discrepancy_sum("l2", a, b) == pytest.approx(1.0)


@pytest.mark.parametrize("metric", ["js", "js_code", "kl", "angular", "l2"])
def test_float32_arithmetic_matches_float64(metric):
    """The search computes in float32 (chunked); it must agree with float64 on realistic
    vocabulary-sized outputs: logits of a slightly perturbed model."""
    g = torch.Generator().manual_seed(0)
    z = 3 * torch.randn(2, 16, 5000, generator=g, dtype=torch.float64)
    z_pruned = z + 0.05 * torch.randn(z.shape, generator=g, dtype=torch.float64)
    ref = z if metric in ("angular", "l2") else torch.log_softmax(z, -1)
    exact = discrepancy_sum(metric, ref, z_pruned)
    single = discrepancy_sum(metric, ref.float(), z_pruned.float())
    assert exact > 0
    assert single == pytest.approx(exact, rel=1e-4)


@pytest.mark.parametrize(
    ("metric", "granularity"), [("js", "sublayer"), ("kl", "block"), ("angular", "attention")]
)
@pytest.mark.slow
def test_naive_and_fast_choose_the_same(metric, granularity):
    lm = load_model(tiny_config("llama"))
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 256, (2, 24), generator=g) for _ in range(2)]
    cands = candidates(8, granularity)
    naive = NaiveEvaluator(lm.model, lm.adapter, batches, metric)
    fast = FastEvaluator(lm.model, lm.adapter, batches, metric)
    a = greedy_order(naive, cands, 6, progress=False)
    b = greedy_order(fast, cands, 6, progress=False)
    assert [c for c, _ in a] == [c for c, _ in b]
    for (_, da), (_, db) in zip(a, b, strict=True):
        assert da == pytest.approx(db, abs=1e-5)
    # blocks before a candidate are never re-run; removed sublayers cost nothing
    assert fast.block_forwards < 0.75 * naive.block_forwards
    # the caller's model is untouched by the fast evaluator's stand-ins
    assert len(list(lm.adapter.attention(lm.model, 0).parameters())) > 0


@pytest.mark.parametrize("family", FAMILIES + ["gemma3_text"])
def test_sublayer_checkpoint_roundtrip(family, tmp_path):
    lm = load_model(tiny_config(family))
    before = count_parameters(lm.model)
    prune_sublayers(lm.model, lm.adapter, attention=[0, 2, 5], mlp=[2, 4, 7])  # block 2 goes
    assert count_parameters(lm.model) < before
    assert len(lm.adapter.blocks(lm.model)) == 7
    folder = save_sublayer_checkpoint(
        lm.model, lm.tokenizer, PruningPlan("finercut", "js", 0.2, 16), tmp_path / "ckpt"
    )
    config = json.loads((folder / "config.json").read_text())
    assert config["num_hidden_layers"] == 7
    assert config["layerprune_removed_attention"] == [0, 4] and config[
        "layerprune_removed_mlp"
    ] == [3, 6]
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as f:
        names = list(f.keys())
    assert not any(n.startswith("model.layers.0.self_attn.") for n in names)
    assert not any(n.startswith("model.layers.3.mlp.") for n in names)
    assert any(n.startswith("model.layers.1.self_attn.") for n in names)

    vanilla = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    ours = load_model(ModelConfig(name="x", source="path", id=str(folder), device="cpu"))
    assert count_parameters(vanilla) == count_parameters(ours.model) == count_parameters(lm.model)
    ids = torch.randint(0, 256, (2, 13))
    with torch.no_grad():
        ref = lm.model(ids).logits
        assert torch.equal(vanilla(ids).logits, ref) and torch.equal(ours.model(ids).logits, ref)
    prompt = ids[:1, :5]  # block 0's attention is gone: the cache must still count positions
    assert_cache_matches_no_cache(vanilla, prompt, 24)


@needs_assets("text")
def test_finercut_job_and_cached_order(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "scan_cache_dir", lambda: tmp_path / "scans")
    base = [
        "model=tiny-qwen2",
        "pruning_method=finercut",
        "metric=js",
        "calibration=wiki",
        "calibration.num_sequences=2",
        "calibration.seq_len=32",
        "benchmark=none",
        "pruning_method.search_fraction=0.25",
    ]
    first = compose(base + ["fraction=0.125"])
    r1 = pipeline.run(validate(first), OmegaConf.to_container(first), tmp_path / "a").to_dict()
    assert r1["scan_cache"] == "miss" and len(r1["plan"]["scores"]["order"]) == 4
    removed = len(r1["plan"]["removed_attention"]) + len(r1["plan"]["removed_mlp"])
    assert removed + 2 * len(r1["plan"]["removed_blocks"]) == 2  # round(0.125 * 16)
    assert (tmp_path / "a" / "removed_sublayers.png").exists()
    second = compose(base + ["fraction=0.25"])
    r2 = pipeline.run(validate(second), OmegaConf.to_container(second), tmp_path / "b").to_dict()
    assert r2["scan_cache"] == "hit"
    assert r2["plan"]["scores"]["order"][:2] == r1["plan"]["scores"]["order"][:2]
    assert r2["params"]["after"] < r1["params"]["after"] < r1["params"]["before"]
