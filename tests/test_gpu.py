"""The CUDA paths (``-m gpu``; skipped without CUDA, run by ``benchmarks/gpu_check.sh``): the
speed stage's allocator-peak memory, bf16 and float32 pruned models on the GPU, QLoRA's 4-bit
reload, and lm-eval's CLI scoring with the shared-prefix scorer as stock on ``--device cuda``."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from layerprune.heal.lora import QLoRA
from layerprune.models.load import load_model
from layerprune.plan import PruningPlan
from layerprune.speed import speed_report
from layerprune.surgery.apply import apply_plan
from layerprune.surgery.blocks import remove_blocks, save_checkpoint
from tests.conftest import assert_cache_matches_no_cache, tiny_config
from tests.test_heal import COMMON, LORA, data, job
from tests.test_lm_eval_cli import QUESTIONS, run_cli, write_task
from tests.test_speed import TINY

pytestmark = pytest.mark.gpu
PLAN = PruningPlan("x", removed_blocks=[6], removed_attention=[0, 3], removed_mlp=[4])


def on_gpu(family: str = "llama", dtype: str = "float32"):
    return load_model(dataclasses.replace(tiny_config(family), device="cuda", dtype=dtype))


def test_speed_stage_on_cuda_measures_the_allocator_peak():
    pruned, ref = on_gpu(), on_gpu()
    apply_plan(pruned.model, pruned.adapter, PLAN)
    speed = speed_report(pruned.model, ref.model, TINY, (pruned.adapter, ref.adapter))
    assert speed["device"] == torch.cuda.get_device_name()
    for model in ("pruned", "unpruned"):
        m = speed[model]
        # the allocator's peak holds at least the weights and the cache
        assert m["peak_bytes_b2"] >= m["weight_bytes"], model
        assert m["decode_b2_tokens_per_s"] > 0 and m["prefill_b1_tokens_per_s"] > 0
    assert speed["ratios"]["params"] < 1


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral", "gemma3_text"])
def test_pruned_model_on_cuda_caches_as_it_runs_without_cache(family):
    lm = on_gpu(family)
    apply_plan(lm.model, lm.adapter, PLAN)
    assert_cache_matches_no_cache(lm.model, torch.randint(3, 256, (2, 6), device="cuda"), 6)


def test_bf16_pruned_model_stays_close_to_float32():
    ids = torch.randint(3, 256, (2, 12), device="cuda")
    logits = {}
    for dtype in ("float32", "bfloat16"):
        lm = on_gpu("llama", dtype)
        apply_plan(lm.model, lm.adapter, PLAN)
        assert next(lm.model.parameters()).dtype == getattr(torch, dtype)
        with torch.no_grad():
            logits[dtype] = lm.model(ids).logits.float()
    scale = logits["float32"].abs().max()
    assert (logits["bfloat16"] - logits["float32"]).abs().max() <= 0.05 * scale


def test_qlora_reloads_the_saved_pruned_model_in_4bit_and_trains(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERPRUNE_HOME", str(tmp_path / "home"))
    state = job(tmp_path)
    state.checkpoint = save_checkpoint(state.model, state.lm.tokenizer, state.plan, tmp_path / "c")
    model = QLoRA(**{**COMMON, "steps": 2, "lr": 1e-3}, **LORA).student(state)
    assert next(model.parameters()).device.type == "cuda"
    assert "Linear4bit" in {type(m).__name__ for m in model.modules()}
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    QLoRA(**{**COMMON, "steps": 2, "lr": 1e-3}, **LORA).train(model, data(), tmp_path / "l.csv")
    after = dict(model.named_parameters())
    assert any(not torch.equal(before[n], after[n].detach()) for n in before)


def test_lm_eval_cli_on_cuda_scores_as_stock(tmp_path):
    lm = load_model(tiny_config("qwen2"))
    remove_blocks(lm.model, lm.adapter, [3, 4])
    plan = PruningPlan("x", removed_blocks=[3, 4], num_candidates=8)
    checkpoint = save_checkpoint(lm.model, lm.tokenizer, plan, tmp_path / "ckpt")
    tasks = write_task(tmp_path / "tasks")
    stock = run_cli("hf", checkpoint, tasks, tmp_path / "stock", device="cuda")
    shared = run_cli("layerprune-shared", checkpoint, tasks, tmp_path / "shared", device="cuda")
    assert len(stock) == len(shared) == len(QUESTIONS)
    for a, b in zip(stock, shared, strict=True):
        for request_a, request_b in zip(a["resps"], b["resps"], strict=True):
            assert abs(float(request_a[0][0]) - float(request_b[0][0])) <= 1e-4
