"""What pruning buys: exact structure figures against hand counts and the real KV cache, the
``speed`` block of a job, a stored job measured again without rerunning it, and each model's
memory measured alone, per device, against a fake CUDA allocator that also holds the other
model. (No timed asserts: times are recorded, never checked.)"""

from __future__ import annotations

import dataclasses
import json
from unittest import mock

import pytest
import torch
from omegaconf import OmegaConf
from transformers import DynamicCache

from layerprune import pipeline, speed
from layerprune.config import SpeedConfig, validate
from layerprune.models.load import count_parameters, load_model
from layerprune.plan import PruningPlan
from layerprune.speed import (
    NOISY_SPREAD,
    Timing,
    kv_bytes_per_token,
    round_spread,
    speed_report,
    structure,
    summary,
)
from layerprune.speed_cli import measure_runs
from layerprune.surgery.apply import apply_plan
from tests.conftest import compose, tiny_config

FAMILIES = ["llama", "qwen2", "mistral", "gemma3_text"]
# tiny configs: 2 KV heads of 64 / 4 = 16 dimensions, float32
KV_LAYER = 2 * 2 * 16 * 4  # K and V, per token, per layer with attention
MARKER = 2 * 4  # a removed attention's position marker (K and V, one float each)
TINY = SpeedConfig(
    prefill_batches=[1, 2],
    prefill_length=8,
    decode_batches=[1, 2],
    prompt_length=4,
    new_tokens=3,
    min_run_time=0.001,
    rounds=1,
)
PLANS = {
    "blocks": PruningPlan("x", removed_blocks=[2, 5], num_candidates=8),
    "sublayers": PruningPlan(
        "x", removed_blocks=[6], removed_attention=[0, 3], removed_mlp=[4], num_candidates=16
    ),
}


def pruned(family: str, plan: PruningPlan):
    lm = load_model(tiny_config(family))
    before = count_parameters(lm.model)
    blocks = lm.adapter.blocks(lm.model)
    gone = sum(p.numel() for i in plan.removed_blocks for p in blocks[i].parameters())
    gone += sum(
        p.numel()
        for i in plan.removed_attention
        for p in lm.adapter.attention(lm.model, i).parameters()
    )
    gone += sum(
        p.numel() for i in plan.removed_mlp for p in lm.adapter.mlp(lm.model, i).parameters()
    )
    apply_plan(lm.model, lm.adapter, plan)
    return lm, before - gone


@pytest.mark.parametrize("kind", list(PLANS))
@pytest.mark.parametrize("family", FAMILIES)
def test_structure_equals_a_hand_count_and_the_real_cache(family, kind):
    plan = PLANS[kind]
    lm, params = pruned(family, plan)
    attention = 8 - len(plan.removed_blocks) - len(plan.removed_attention)
    skipped = len(plan.removed_attention)
    s = structure(lm.model, lm.adapter)
    assert s["params"] == count_parameters(lm.model) == params
    assert s["kv_bytes_per_token"] == attention * KV_LAYER + skipped * MARKER
    assert s["attention_layers"] == attention and s["blocks"] == 8 - len(plan.removed_blocks)
    # what a real cache holds after a forward of 2 x 10 tokens (Gemma's window is 16)
    cache = DynamicCache()
    with torch.no_grad():
        lm.model(torch.randint(0, 256, (2, 10)), past_key_values=cache, use_cache=True)
    held = sum(
        t.numel() * t.element_size()
        for layer in cache.layers
        if getattr(layer, "keys", None) is not None
        for t in (layer.keys, layer.values)
    )
    assert held == 2 * 10 * kv_bytes_per_token(lm.model, lm.adapter)


def test_speed_report_has_both_models_ratios_and_ideals():
    lm, _ = pruned("llama", PLANS["blocks"])
    ref = load_model(tiny_config("llama"))
    speed = speed_report(lm.model, ref.model, TINY, (lm.adapter, ref.adapter))
    for model in ("pruned", "unpruned"):
        m = speed[model]
        for key in (
            "prefill_b1_tokens_per_s",
            "decode_b2_tokens_per_s",
            "ttft_b1_s",
            "peak_bytes_b2",
        ):
            assert m[key] > 0, (model, key)
    r = speed["ratios"]
    assert r["kv_bytes_per_token"] == pytest.approx(6 / 8) and r["params"] < 1
    # CPU memory: weights + the cache at the end of decode, from the structure
    tokens = 2 * (TINY.prompt_length + TINY.new_tokens)
    pr = speed["pruned"]
    assert pr["peak_bytes_b2"] == pr["weight_bytes"] + tokens * pr["kv_bytes_per_token"]
    assert speed["ideal"]["prefill"] > 1 and speed["ideal"]["decode_b1"] > 1
    assert "KV cache 0.75x" in summary(speed) and "decode b1 " in summary(speed)
    assert pr["prefill_b1_round_spread"] >= 0 and "prefill_b1_round_spread" not in r


def test_a_busy_round_is_named_noisy(caplog):
    """Rounds of one timing that disagree (a busy machine) are reported, not averaged away."""
    assert round_spread([1.0, 1.0]) == 0 and round_spread([2.0, 1.0]) == pytest.approx(1.0)
    lm, _ = pruned("llama", PLANS["blocks"])
    ref = load_model(tiny_config("llama"))
    # per round: the unpruned model, then the pruned; the unpruned's second round 3x slower
    medians = iter([1.0, 1.0, 3.0, 1.0])
    fake = classmethod(lambda cls, fn, min_run_time: Timing(next(medians), 0.0))
    sizes = dataclasses.replace(TINY, prefill_batches=[1], decode_batches=[], rounds=2)
    with mock.patch.object(Timing, "of", fake), caplog.at_level("WARNING"):
        speed = speed_report(lm.model, ref.model, sizes, (lm.adapter, ref.adapter))
    assert speed["unpruned"]["prefill_b1_round_spread"] == pytest.approx(2.0) and NOISY_SPREAD < 2.0
    assert speed["pruned"]["prefill_b1_round_spread"] == 0
    assert "rounds disagree" in caplog.text


@pytest.mark.slow
def test_a_job_records_speed_and_a_stored_job_is_measured_again_alike(tmp_path):
    sizes = [f"speed.{k}={json.dumps(v)}" for k, v in TINY.__dict__.items() if k != "name"]
    cfg = compose(
        ["model=tiny-qwen2", "pruning_method=last_layers", "fraction=0.25", "benchmark=none"]
        + ["save_checkpoint=true", "speed=default", *sizes]
    )
    fresh = pipeline.run(validate(cfg), OmegaConf.to_container(cfg), tmp_path / "job")
    assert fresh.speed["pruned"]["checkpoint_bytes"] > 0
    assert set(fresh.speed) >= {"pruned", "unpruned", "ratios", "ideal", "sizes", "device"}
    stored = tmp_path / "job" / "results.json"
    saved = json.loads(stored.read_text())["speed"]
    assert measure_runs([stored], TINY) == 1
    again = json.loads(stored.read_text())["speed"]
    exact = ("params", "weight_bytes", "kv_bytes_per_token", "blocks", "attention_layers")
    for model in ("pruned", "unpruned"):
        for key in exact:
            assert again[model][key] == saved[model][key], (model, key)
    unpruned = compose(
        ["model=tiny-qwen2", "pruning_method=none", "benchmark=none", "speed=default"]
    )
    r = pipeline.run(validate(unpruned), OmegaConf.to_container(unpruned), tmp_path / "u")
    assert r.speed is None  # nothing removed: nothing to compare


def test_structure_only_measures_no_time():
    lm, _ = pruned("mistral", PLANS["sublayers"])
    ref = load_model(tiny_config("mistral"))
    only = SpeedConfig(prefill_batches=[], decode_batches=[])
    speed = speed_report(lm.model, ref.model, only, (lm.adapter, ref.adapter))
    assert not any(k.endswith("_s") for k in speed["pruned"])
    assert speed["ratios"]["attention_layers"] == pytest.approx(5 / 8)


@pytest.mark.parametrize("tied", [False, True])
def test_flops_per_token_count_each_linear_layer_once_tied_head_or_not(tied):
    lm, _ = pruned("llama", PLANS["blocks"])  # 6 blocks of hidden 64, MLP 128, 2 KV heads
    if tied:
        lm.model.lm_head.weight = lm.model.model.embed_tokens.weight
    # per block: q, o 64 x 64; k, v 64 x 32; gate, up, down 64 x 128; the head 272 x 64
    block = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128
    s = structure(lm.model, lm.adapter)
    assert s["flops_per_token"] == 2 * (6 * block + 272 * 64)
    assert s["head_flops_per_token"] == 2 * 272 * 64
    embedding = 0 if tied else 272 * 64 * 4  # a decode step does not read an untied table
    assert s["bytes_per_token"] == s["weight_bytes"] - embedding


CUDA0 = torch.device("cuda:0")
MEMORY = dataclasses.replace(TINY, prefill_batches=[], decode_batches=[2])


class FakeAllocator:
    """``torch.cuda``'s memory counters where ``held`` bytes are allocated on each device before
    a decode (both models' weights, and anything else) and the decode adds ``transient``."""

    def __init__(self, held: dict[str, int], transient: dict[str, int]):
        self.held, self.transient, self.reset = held, transient, []

    def memory_allocated(self, device) -> int:
        return self.held[str(device)]

    def reset_peak_memory_stats(self, device) -> None:
        self.reset.append(str(device))

    def max_memory_allocated(self, device) -> int:
        return self.held[str(device)] + self.transient[str(device)]

    def synchronize(self, device=None) -> None:
        pass

    def install(self, monkeypatch) -> None:
        for name in ("memory_allocated", "reset_peak_memory_stats", "max_memory_allocated"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))
        monkeypatch.setattr(torch.cuda, "synchronize", self.synchronize)


def tensors(*modules) -> list[torch.Tensor]:
    return [t for m in modules for t in [*m.parameters(), *m.buffers()]]


def tensor_bytes(*modules) -> int:
    return sum(t.numel() * t.element_size() for t in tensors(*modules))


def place_on_cuda(monkeypatch, modules) -> None:
    """``speed`` sees the tensors of ``modules`` on cuda:0 (they stay on the CPU and run there)."""
    on_cuda = {t.data_ptr() for t in tensors(*modules)}
    fake = lambda t: CUDA0 if t.data_ptr() in on_cuda else t.device  # noqa: E731
    monkeypatch.setattr(speed, "_device_of", fake)


def test_each_model_memory_is_its_own_though_both_are_on_the_gpu(monkeypatch):
    """The allocator's peak holds both models; each model's figure holds only its own weights
    (and its decode's transient), so the ratio is the models' (the shared peak's: ~1)."""
    lm, _ = pruned("llama", PLANS["blocks"])
    ref = load_model(tiny_config("llama"))
    place_on_cuda(monkeypatch, [lm.model, ref.model])
    own = {"pruned": tensor_bytes(lm.model), "unpruned": tensor_bytes(ref.model)}
    allocator = FakeAllocator({"cuda:0": sum(own.values()) + 5_000}, {"cuda:0": 3_000})
    allocator.install(monkeypatch)
    s = speed_report(lm.model, ref.model, MEMORY, (lm.adapter, ref.adapter))
    for name in ("pruned", "unpruned"):
        assert s[name]["peak_bytes_b2_by_device"] == {"cuda:0": own[name] + 3_000}
        assert s[name]["peak_bytes_b2"] == own[name] + 3_000
    ratio = (own["pruned"] + 3_000) / (own["unpruned"] + 3_000)
    assert s["ratios"]["peak_bytes_b2"] == pytest.approx(ratio) and ratio < 0.8
    assert allocator.reset == ["cuda:0", "cuda:0"] and s["devices"] == ["cuda:0"]


def test_a_split_model_reports_its_memory_per_device(monkeypatch):
    """Embedding and the first half of the blocks on cuda:0, the rest on the CPU: cuda:0 holds
    its weights + the decode's transient there, the CPU its weights + its layers' KV cache."""
    lm, _ = pruned("llama", PLANS["blocks"])  # 6 blocks left
    ref = load_model(tiny_config("llama"))
    first = {}
    for name, m in (("pruned", lm), ("unpruned", ref)):
        blocks = m.adapter.blocks(m.model)
        first[name] = [m.model.get_input_embeddings(), *blocks[: len(blocks) // 2]]
    place_on_cuda(monkeypatch, first["pruned"] + first["unpruned"])
    on_cuda = {k: tensor_bytes(*v) for k, v in first.items()}
    FakeAllocator({"cuda:0": sum(on_cuda.values()) + 7}, {"cuda:0": 1_000}).install(monkeypatch)
    s = speed_report(lm.model, ref.model, MEMORY, (lm.adapter, ref.adapter))
    tokens = 2 * (MEMORY.prompt_length + MEMORY.new_tokens)
    cpu_layers = {"pruned": 3, "unpruned": 4}  # the second half of 6 and of 8 blocks
    for name, m in (("pruned", lm), ("unpruned", ref)):
        cpu = tensor_bytes(m.model) - on_cuda[name] + tokens * cpu_layers[name] * KV_LAYER
        by_device = s[name]["peak_bytes_b2_by_device"]
        assert by_device == {"cuda:0": on_cuda[name] + 1_000, "cpu": cpu}
        assert list(by_device) == ["cuda:0", "cpu"]  # the embedding's device first
        assert s[name]["peak_bytes_b2"] == sum(by_device.values())
    assert s["devices"] == ["cuda:0", "cpu"]
