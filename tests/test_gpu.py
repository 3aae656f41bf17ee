"""The GPU tier (``-m gpu``; skipped without CUDA; ``benchmarks/gpu_check.sh`` runs it): every
stage of a job in bf16, on one GPU and on a tiny model split over ``cuda:0`` and the CPU, each
with its behaviour asserted:

- the scan (``deeper_layers``), FinerCut with ``js``, ``ppl``: what the plan names is gone,
  generation with the KV cache picks the no-cache forward's tokens, and the scores equal the
  CPU float32 reference within bf16 rounding;
- LoRA, QLoRA with gradient checkpointing (each block runs twice per micro-batch), KD with its
  hidden-state term: the trained weights moved, and sit on their layers' devices;
- evaluation (perplexity) against the CPU float32 reference; the shared-prefix scorer against
  stock lm-eval to 1e-4 in float32 (in memory, and through lm-eval's CLI on one GPU);
- speed: each model's memory alone, per device it spans.

The split stands for ``device_map`` over several GPUs with one GPU: the embedding and blocks
0-5 on ``cuda:0``, blocks 6-7, the final norm and the head on the CPU, each part run where it
is (accelerate's hooks move the activations), so a tensor made on ``lm.device`` meets outputs
of another device, as on the first and the last GPU of a 70B split. (``from_pretrained`` with
such a ``device_map`` would *offload* the CPU part and run it on the GPU: not a split.)

The text is synthetic words (``documents``), so the GPU machine needs no built assets.

Dry run on a CPU-only machine: ``LAYERPRUNE_TEST_DEVICE=cpu pytest -m gpu tests/test_gpu.py``
maps ``cuda:0`` to the CPU (a split is then one device) and skips only the asserts that need
CUDA (the allocator's figures, the device's name): it checks the tests' own logic.
"""

from __future__ import annotations

import dataclasses
import os
import random
import stat
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from layerprune import pipeline
from layerprune.config import validate
from layerprune.models import load
from layerprune.models.load import LoadedModel
from layerprune.plan import PruningPlan
from layerprune.speed import speed_report
from layerprune.surgery.apply import apply_plan
from layerprune.surgery.blocks import remove_blocks, save_checkpoint
from layerprune.surgery.skip import SkippedAttention, SkippedMLP
from tests.conftest import compose, tiny_config

pytestmark = pytest.mark.gpu
DRY = os.environ.get("LAYERPRUNE_TEST_DEVICE") == "cpu"
GPU = "cpu" if DRY else "cuda:0"  # the dry run maps cuda:0 to the CPU
ON_CUDA = not DRY
CUT = 0.75  # the split: the first 3/4 of the blocks on the GPU (6 of 8), the rest on the CPU
PLACEMENTS = ["one", "split"]
PLAN = PruningPlan("x", removed_blocks=[6], removed_attention=[0, 3], removed_mlp=[4])
# bf16 against float32; measured on the CPU dry run: losses 1e-4 to 2e-4 of ~5.6 nats,
# angular distances 4e-4, JS 0.4% of the largest (~3e-3), the logits of a generated token
# 0 below the best (of |logits| <= 0.6)
LOSS_TOL = 0.02  # nats
DISTANCE_TOL = 0.02
JS_REL = 0.05  # of the largest discrepancy
LOGIT_REL = 0.02  # of the largest |logit|
WORDS = " ".join(
    [
        "the of and to in is was for on that with as by at from his her an were which are this",
        "be has it had not also their first new after two who they one its been more city river",
        "year king game music school team world war state north light water stone green",
    ]
).split()


def documents(source: str, split: str) -> list[str]:
    """Synthetic documents for every text source and split (a seed per split: disjoint)."""
    g = random.Random(f"{source}/{split}")
    return [" ".join(g.choice(WORDS) for _ in range(250)) + "." for _ in range(16)]


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    """Caches in a fresh home; the synthetic text instead of the offline assets."""
    monkeypatch.setenv("LAYERPRUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("layerprune.data.text.load_documents", documents)


@pytest.fixture(params=PLACEMENTS)
def placement(request) -> str:
    return request.param


def devices(placement: str) -> list[str]:
    """The devices a placed model spans, the embedding's first."""
    return list(dict.fromkeys([GPU] if placement == "one" else [GPU, "cpu"]))


def place(lm: LoadedModel, placement: str, gpu: str = GPU) -> LoadedModel:
    """``one``: ``lm`` as loaded (on the GPU); ``split``: module doc (``benchmarks/
    speed_memory.py`` splits a SmolLM2-sized model so too)."""
    if placement == "one":
        return lm
    from accelerate import dispatch_model

    n = len(lm.adapter.blocks(lm.model))
    device_map = {"model.embed_tokens": gpu, "model.rotary_emb": gpu}
    device_map |= {f"model.layers.{i}": gpu if i < CUT * n else "cpu" for i in range(n)}
    device_map |= {"model.norm": "cpu", "lm_head": "cpu"}
    skip = list(getattr(lm.model, "_skip_keys_device_placement", None) or [])
    # hooks even where the map names one device (the dry run): the same code runs
    dispatch_model(lm.model, device_map, main_device="cpu", skip_keys=skip, force_hooks=True)
    return dataclasses.replace(lm, device=torch.device(gpu))


def tiny(**shape) -> object:
    """The tiny Llama's config, its random model's ``shape`` fields replaced."""
    config = tiny_config("llama")
    config.random = dataclasses.replace(config.random, **shape)
    return config


def placed_model(placement: str, dtype: str = "bfloat16", **shape) -> LoadedModel:
    config = dataclasses.replace(tiny(**shape), device=GPU, dtype=dtype)
    return place(load.load_model(config), placement)


def reference_model(**shape) -> LoadedModel:
    """The same weights in float32 on the CPU."""
    return load.load_model(tiny(**shape))


def block_devices(lm: LoadedModel) -> list[str]:
    return [str(next(b.parameters()).device) for b in lm.adapter.blocks(lm.model)]


class Jobs:
    """Pipeline jobs whose every load (the job's model, the KD teacher, the speed stage's
    unpruned model) is placed as ``placement`` says; ``loaded`` keeps them in load order."""

    BASE = [
        "model=tiny-llama",
        "calibration.num_sequences=4",
        "calibration.seq_len=32",
        "calibration.batch_size=2",
        "benchmark=none",
    ]

    def __init__(self, tmp_path: Path, monkeypatch):
        self.tmp, self.placement, self.loaded = tmp_path, "one", []
        real = load.load_model

        def placed(cfg, **overrides) -> LoadedModel:
            lm = real(cfg, **overrides) if overrides else real(cfg)
            if self.placement != "reference":
                lm = place(lm, self.placement)
            self.loaded.append(lm)
            return lm

        monkeypatch.setattr(load, "load_model", placed)

    def run(self, overrides: list[str], placement: str) -> dict:
        """One job in bf16 on ``placement``, or (``reference``) in float32 on the CPU."""
        self.placement, self.loaded = placement, []
        model = ["model.device=cpu", "model.dtype=float32"]
        if placement != "reference":
            model = [f"model.device={GPU}", "model.dtype=bfloat16"]
        cfg = compose([*self.BASE, *model, *overrides])
        out = self.tmp / f"job{len(list(self.tmp.glob('job*')))}"
        return pipeline.run(validate(cfg), OmegaConf.to_container(cfg), out).to_dict()


@pytest.fixture
def jobs(tmp_path, monkeypatch) -> Jobs:
    return Jobs(tmp_path, monkeypatch)


def assert_generates_as_without_cache(model: torch.nn.Module) -> None:
    """Greedy generation with the KV cache picks, at every step, a token the no-cache forward
    over the generated sequence ranks first (in bf16 up to ``LOGIT_REL``: rounding can swap
    near-ties)."""
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(3, 256, (2, 6), generator=g).to(next(model.parameters()).device)
    with torch.no_grad():
        out = model.generate(
            prompt, max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0
        )
        logits = model(out, use_cache=False).logits.float()
    steps = logits[:, prompt.shape[1] - 1 : -1]  # the logits that chose each new token
    chosen = steps.gather(-1, out[:, prompt.shape[1] :, None].to(steps.device))[..., 0]
    half = next(model.parameters()).dtype != torch.float32
    tol = LOGIT_REL * float(logits.abs().max()) if half else 1e-5
    assert out.shape[1] == prompt.shape[1] + 6
    assert (steps.max(-1).values - chosen).max() <= tol


# -- select and prune ----------------------------------------------------------------------


def test_deeper_layers_scan_matches_float32_and_removes_the_blocks(jobs, placement):
    overrides = ["pruning_method=deeper_layers", "fraction=0.25"]
    ref = jobs.run(overrides, "reference")
    r = jobs.run(overrides, placement)
    lm = jobs.loaded[0]
    assert r["scan_cache"] == "miss" and len(r["plan"]["removed_blocks"]) == 2
    assert len(lm.adapter.blocks(lm.model)) == 6  # really gone, not skipped
    assert r["params"]["after"] == ref["params"]["after"] < r["params"]["before"]
    curve, ref_curve = r["plan"]["scores"]["d(l,n)"], ref["plan"]["scores"]["d(l,n)"]
    assert max(abs(a - b) for a, b in zip(curve, ref_curve, strict=True)) <= DISTANCE_TOL
    assert_generates_as_without_cache(lm.model)


def test_finercut_js_matches_float32_and_removes_sublayers(jobs, placement):
    from layerprune.methods.search import FastEvaluator, candidates

    overrides = ["pruning_method=finercut", "metric=js", "fraction=0.125"]
    r = jobs.run([*overrides, "pruning_method.search_fraction=0.125"], placement)
    lm, plan = jobs.loaded[0], r["plan"]
    removed = len(plan["removed_attention"]) + len(plan["removed_mlp"])
    assert removed + 2 * len(plan["removed_blocks"]) == 2  # round(0.125 x 16 sublayers)
    for i in plan["removed_attention"]:
        assert isinstance(lm.adapter.attention(lm.model, i), SkippedAttention)
    for i in plan["removed_mlp"]:
        assert isinstance(lm.adapter.mlp(lm.model, i), SkippedMLP)
    assert_generates_as_without_cache(lm.model)
    # every candidate's one-shot discrepancy, bf16 placed against float32 on the CPU
    ids = torch.randint(3, 256, (2, 32), generator=torch.Generator().manual_seed(1))
    scores = {}
    for name, m in (("placed", placed_model(placement)), ("reference", reference_model())):
        ev = FastEvaluator(m.model, m.adapter, [ids.to(m.device)], "js")
        scores[name] = ev.scores(candidates(8, "sublayer"))
    diffs = [abs(a - b) for a, b in zip(scores["placed"], scores["reference"], strict=True)]
    assert max(diffs) <= JS_REL * max(scores["reference"])


def test_ppl_losses_match_float32_and_remove_the_blocks(jobs, placement):
    overrides = ["pruning_method=ppl", "fraction=0.25"]
    ref = jobs.run(overrides, "reference")
    r = jobs.run(overrides, placement)
    lm = jobs.loaded[0]
    assert len(r["plan"]["removed_blocks"]) == 2 and len(lm.adapter.blocks(lm.model)) == 6
    losses = {block: loss for block, loss, _ in r["plan"]["scores"]["order"]}
    ref_losses = {block: loss for block, loss, _ in ref["plan"]["scores"]["order"]}
    assert losses.keys() == ref_losses.keys() == set(range(8))
    assert max(abs(losses[b] - ref_losses[b]) for b in losses) <= LOSS_TOL
    assert_generates_as_without_cache(lm.model)


# -- heal ------------------------------------------------------------------------------------

HEAL = [
    "pruning_method=last_layers",  # blocks 5 and 6: across the split (6 is on the CPU)
    "fraction=0.25",
    "healing.steps=3",
    "healing.batch_size=2",
    "healing.seq_len=32",
    "healing.lr=1e-3",
    "healing.warmup_steps=0",
    "healing.checkpoint_every=0",
]


def lora_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if "lora_B" in n}


def assert_lora_trained_in_place(model: torch.nn.Module) -> None:
    """LoRA's B (zero at the start) moved, and each adapter sits on its base layer's device."""
    trained = lora_weights(model)
    assert trained and any(p.detach().abs().sum() > 0 for p in trained.values())
    for module in model.modules():
        if hasattr(module, "lora_B") and "default" in module.lora_B:
            base = module.base_layer.weight.device
            assert module.lora_B["default"].weight.device == base


def test_lora_trains_on_the_placed_model(jobs, placement):
    r = jobs.run([*HEAL, "healing=lora"], placement)  # evaluated merged into a copy
    lm = jobs.loaded[0]
    assert r["healing"]["steps"] == 3 and r["healing"]["evaluated"] == "merged"
    assert torch.isfinite(torch.tensor(r["healing"]["last_loss"]))
    assert_lora_trained_in_place(lm.model)
    assert block_devices(lm) == ([GPU] * 5 + ["cpu"] if placement == "split" else [GPU] * 6)


def test_qlora_reloads_in_4bit_and_trains_with_checkpointing(jobs, placement, monkeypatch):
    """Gradient checkpointing recomputes each block in backward: with 3 steps of one micro-
    batch every block runs 6 times with gradients on (3 without checkpointing)."""
    pytest.importorskip("bitsandbytes")
    from layerprune.heal import lora

    reloads, calls = [], []
    real = lora.load_4bit

    def counted(*args, **kwargs):
        base = real(*args, **kwargs)
        reloads.append(base)
        for block in base.model.layers:
            # the block's first module: a recompute runs the block's forward (not its hooks)
            # and may stop early, once it has what backward needs
            norm = block.input_layernorm
            norm.register_forward_pre_hook(lambda *_: calls.append(torch.is_grad_enabled()))
        return base

    monkeypatch.setattr(lora, "load_4bit", counted)
    r = jobs.run([*HEAL, "healing=qlora", "healing.gradient_checkpointing=true"], placement)
    (base,) = reloads
    assert "Linear4bit" in {type(m).__name__ for m in base.modules()}
    assert sum(calls) == 3 * 2 * 6  # steps x (forward + recompute) x blocks
    assert_lora_trained_in_place(base)
    assert r["healing"]["steps"] == 3 and torch.isfinite(torch.tensor(r["healing"]["last_loss"]))
    if ON_CUDA:  # the one GPU holds the whole tiny model, split or not ("auto" reload)
        assert {p.device.type for p in base.parameters()} == {"cuda"}


def test_kd_trains_the_student_from_the_placed_teacher(jobs, placement):
    overrides = ["healing=kd", "healing.hidden_weight=0.5", "healing.ce_weight=0.1"]
    r = jobs.run([*HEAL, *overrides], placement)
    student, teacher = jobs.loaded[0], jobs.loaded[1]
    parts = r["healing"]["last_parts"]
    assert {"kd", "ce", "hidden"} <= set(parts) and all(v == v for v in parts.values())
    assert_lora_trained_in_place(student.model)
    assert not lora_weights(teacher.model)  # the teacher is untouched
    assert not any(p.requires_grad for p in teacher.model.parameters())
    assert block_devices(teacher) == (
        [GPU] * 6 + ["cpu"] * 2 if placement == "split" else [GPU] * 8
    )


# -- evaluate and speed ----------------------------------------------------------------------

PERPLEXITY = (
    "benchmark.perplexity=[{source: wiki, split: evaluation, context_length: 64, stride: 64,"
    " max_tokens: 1024, batch_size: 4}]"
)
SPEED = [
    "speed=default",
    "speed.prefill_batches=[2]",
    "speed.prefill_length=16",
    "speed.decode_batches=[2]",
    "speed.prompt_length=4",
    "speed.new_tokens=3",
    "speed.min_run_time=0.01",
    "speed.rounds=1",
]


def test_perplexity_matches_float32_and_speed_reports_each_device(jobs, placement):
    overrides = ["pruning_method=last_layers", "fraction=0.25", "benchmark=perplexity", PERPLEXITY]
    ref = jobs.run(overrides, "reference")
    r = jobs.run([*overrides, *SPEED], placement)
    assert r["metrics"]["wiki/tokens"] == ref["metrics"]["wiki/tokens"] > 0
    assert abs(r["metrics"]["wiki/loss"] - ref["metrics"]["wiki/loss"]) <= LOSS_TOL
    speed = r["speed"]
    assert speed["devices"] == devices(placement)
    pruned, unpruned = jobs.loaded[0], jobs.loaded[1]
    tokens = 2 * (4 + 3)
    kv_layer = 2 * 2 * 16 * 2  # K and V, 2 KV heads of 16, bf16
    for name, lm in (("pruned", pruned), ("unpruned", unpruned)):
        by_device = speed[name]["peak_bytes_b2_by_device"]
        assert list(by_device) == devices(placement)
        assert speed[name]["peak_bytes_b2"] == sum(by_device.values())
        on_cpu = [d == "cpu" for d in block_devices(lm)]
        if "cpu" in by_device:  # its weights there + its layers' KV cache there
            weights = sum(
                t.numel() * t.element_size()
                for t in [*lm.model.parameters(), *lm.model.buffers()]
                if t.device.type == "cpu"
            )
            assert by_device["cpu"] == weights + tokens * kv_layer * sum(on_cpu)
    assert speed["ratios"]["peak_bytes_b2"] < 1


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_each_models_memory_is_its_own_on_every_device(placement):
    """Wider blocks (weights far above a decode's transient): each model's figure per device
    holds its own weights, not the other model's, so the ratio reads the models' (~ their
    weights' ratio; the allocator's shared peak would read ~1)."""
    from layerprune.speed import resident_bytes

    wide = {"hidden_size": 256, "intermediate_size": 1024, "vocab_size": 512}
    pruned, ref = placed_model(placement, **wide), placed_model(placement, **wide)
    apply_plan(pruned.model, pruned.adapter, PruningPlan("x", removed_blocks=[4, 5]))
    sizes = dataclasses.replace(
        validate(compose(SPEED)).speed, prefill_batches=[], decode_batches=[2]
    )
    speed = speed_report(pruned.model, ref.model, sizes, (pruned.adapter, ref.adapter))
    held = {n: resident_bytes(m.model) for n, m in (("pruned", pruned), ("unpruned", ref))}
    for name in ("pruned", "unpruned"):
        by_device = speed[name]["peak_bytes_b2_by_device"]
        assert list(by_device) == devices(placement)
        for device, figure in by_device.items():
            own = held[name][torch.device(device)]
            other = held["unpruned" if name == "pruned" else "pruned"][torch.device(device)]
            assert own <= figure < own + other  # the other model is not in it
    weights = speed["ratios"]["weight_bytes"]
    assert abs(speed["ratios"]["peak_bytes_b2"] - weights) <= 0.05 and weights < 0.85
    if ON_CUDA:
        assert speed["device"] == torch.cuda.get_device_name()


# -- the scorer ------------------------------------------------------------------------------

QUESTIONS = [
    ("The cat sat on the", ["mat", "moon landing", "mat and purred", "idea"]),
    ("Two plus two is", ["four", "five", "four, as everyone knows", "a fish"]),
    ("Water boils at", ["100 degrees", "100 degrees Celsius at sea level", "noon"]),
    ("A question shares this prefix:", ["yes", "no"]),
]


def scorer_requests(tokenizer) -> list[tuple]:
    """Token requests as a 2-shot task builds them: a shared prefix, questions, options."""
    shots = "Q: Is the sky blue? A: yes\n\nQ: Is fire cold? A: no\n\n"
    out = []
    for question, options in QUESTIONS:
        context = tokenizer.encode(f"{shots}Q: {question} A:")
        out += [(None, context, tokenizer.encode(f" {o}")) for o in options]
    return out


def test_shared_prefix_scorer_scores_as_stock_in_float32(placement):
    from layerprune.evaluate.shared_prefix import CountingLM, SharedPrefixLM

    lm = placed_model(placement, dtype="float32")
    remove_blocks(lm.model, lm.adapter, [3, 4])
    kw = {"pretrained": lm.model, "tokenizer": lm.tokenizer, "batch_size": 16, "device": GPU}
    stock, shared = CountingLM(**kw), SharedPrefixLM(**kw)
    requests = scorer_requests(lm.tokenizer)
    a = stock._loglikelihood_tokens(requests, disable_tqdm=True)
    b = shared._loglikelihood_tokens(requests, disable_tqdm=True)
    assert shared._cache_ok and shared.model_calls > 0  # the shared path, not stock's
    assert max(abs(x[0] - y[0]) for x, y in zip(a, b, strict=True)) <= 1e-4
    assert [x[1] for x in a] == [y[1] for y in b]


def test_lm_eval_cli_scores_as_stock_on_the_gpu(tmp_path, monkeypatch):
    """lm-eval's own CLI on ``--device cuda``: ``layerprune-shared`` against ``hf``, 1e-4."""
    from tests import test_lm_eval_cli as cli

    if not Path(cli.CLI).exists():  # run from the source tree (gpu_check.sh): a launcher
        script = tmp_path / "layerprune-lm-eval"
        script.write_text(
            f"#!{sys.executable}\nfrom layerprune.evaluate.lm_eval_cli import main\nmain()\n"
        )
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
        monkeypatch.setattr(cli, "CLI", str(script))
    lm = load.load_model(tiny_config("qwen2"))
    remove_blocks(lm.model, lm.adapter, [3, 4])
    plan = PruningPlan("x", removed_blocks=[3, 4], num_candidates=8)
    checkpoint = save_checkpoint(lm.model, lm.tokenizer, plan, tmp_path / "ckpt")
    tasks = cli.write_task(tmp_path / "tasks")
    device = "cuda" if ON_CUDA else "cpu"
    stock = cli.run_cli("hf", checkpoint, tasks, tmp_path / "stock", device=device)
    shared = cli.run_cli("layerprune-shared", checkpoint, tasks, tmp_path / "shared", device)
    assert len(stock) == len(shared) == len(cli.QUESTIONS)
    for x, y in zip(stock, shared, strict=True):
        for request_a, request_b in zip(x["resps"], y["resps"], strict=True):
            assert abs(float(request_a[0][0]) - float(request_b[0][0])) <= 1e-4


# -- the models on the device ----------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral", "gemma3_text"])
def test_pruned_model_on_the_gpu_caches_as_it_runs_without_cache(family):
    from tests.conftest import assert_cache_matches_no_cache

    lm = load.load_model(dataclasses.replace(tiny_config(family), device=GPU))
    apply_plan(lm.model, lm.adapter, PLAN)
    ids = torch.randint(3, 256, (2, 6)).to(GPU)
    assert_cache_matches_no_cache(lm.model, ids, 6)


def test_bf16_pruned_model_stays_close_to_float32():
    ids = torch.randint(3, 256, (2, 12)).to(GPU)
    logits = {}
    for dtype in ("float32", "bfloat16"):
        lm = placed_model("one", dtype)
        apply_plan(lm.model, lm.adapter, PLAN)
        assert next(lm.model.parameters()).dtype == getattr(torch, dtype)
        with torch.no_grad():
            logits[dtype] = lm.model(ids).logits.float()
    scale = logits["float32"].abs().max()
    assert (logits["bfloat16"] - logits["float32"]).abs().max() <= 0.05 * scale


def test_the_split_runs_each_part_where_it_is():
    lm = placed_model("split")
    assert block_devices(lm) == [GPU] * 6 + ["cpu"] * 2
    assert str(lm.model.get_output_embeddings().weight.device) == "cpu"
    assert lm.device == torch.device(GPU) == next(lm.model.parameters()).device
    ref = reference_model()
    ids = torch.randint(3, 256, (2, 12)).to(GPU)
    with torch.no_grad():
        out, expected = lm.model(ids).logits, ref.model(ids.cpu()).logits
    assert out.device == ids.device  # accelerate returns outputs where the inputs were
    assert (out.float().cpu() - expected).abs().max() <= 0.05 * expected.abs().max()
