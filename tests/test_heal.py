"""Healing: the healers as plug-ins, the loop, resuming, merged evaluation and distillation.

LoRA learns, QLoRA after an eval pass still gets gradients, merged == unmerged, a killed run
resumes where its last snapshot left off, a constant-rate run continues from a shorter one to
the weights of one long run, the KD loss equals a hand computation, the teacher is untouched.
"""

from __future__ import annotations

import copy
import json
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from layerprune import paths
from layerprune.heal.base import HealingText
from layerprune.heal.kd import KD, hidden_loss, kd_loss, topk_kd_loss
from layerprune.heal.lora import LoRA, Partial, QLoRA
from layerprune.heal.train import resume_folder
from layerprune.job import JobState
from layerprune.models.load import load_model
from layerprune.plan import PruningPlan
from layerprune.surgery.blocks import remove_blocks, save_checkpoint
from tests.conftest import ASSET_HOME, needs_assets, tiny_config

COMMON = dict(
    steps=8,
    batch_size=2,
    grad_accum=1,
    lr=1e-2,
    warmup_steps=0,
    checkpoint_every=0,
    seq_len=32,
    max_epochs=8.0,  # the 4-row test text, several passes
)
LORA = dict(lora_rank=4, lora_alpha=8.0, lora_dropout=0.0)


def data(n: int = 4, length: int = 32) -> HealingText:
    """Learnable text: each row cycles through a short alphabet (random tokens are not)."""
    rows = torch.stack([(torch.arange(length) + 3 * i) % 7 + 97 for i in range(n)])
    return HealingText(rows, "test/healing")


def job(tmp_path, family: str = "llama", removed=(5, 6), layers: int = 8) -> JobState:
    """A job whose tiny model has ``removed`` blocks deleted, as the prune stage leaves it."""
    config = tiny_config(family, layers)
    state = JobState(tmp_path, 0, 0.25, partial(load_model, config))
    state.lm = state.loader()
    state.num_blocks = layers
    state.plan = PruningPlan("x", removed_blocks=list(removed), num_candidates=layers)
    remove_blocks(state.lm.model, state.lm.adapter, list(removed))
    state.model = state.lm.model
    return state


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERPRUNE_HOME", str(tmp_path / "home"))


@pytest.mark.parametrize("healer", [LoRA(**COMMON, **LORA), Partial(**COMMON, partial_blocks=2)])
def test_training_lowers_the_loss(healer, tmp_path):
    state = job(tmp_path)
    model = healer.student(state)
    result = healer.train(model, data(), tmp_path / "loss.csv")
    assert result.last_loss < result.first_loss - 0.3  # nats; random-weight start ~5.5
    rows = (tmp_path / "loss.csv").read_text().splitlines()
    assert rows[0] == "step,loss,lr" and len(rows) == 9
    assert result.tokens == 8 * 2 * 32 and result.epochs == 4.0


def test_partial_trains_only_the_last_blocks_and_head(tmp_path):
    state = job(tmp_path, "qwen2", removed=())
    model = Partial(**COMMON, partial_blocks=2).student(state)
    trainable = {
        n.split(".")[2]
        for n, p in model.named_parameters()
        if p.requires_grad and n.startswith("model.layers.")
    }
    assert trainable == {"6", "7"}
    assert model.lm_head.weight.requires_grad and not model.model.embed_tokens.weight.requires_grad


@pytest.mark.slow
def test_qlora_after_an_eval_pass_gets_gradients(tmp_path):
    state = job(tmp_path)
    with torch.no_grad():  # an evaluation of the pruned model, as a sweep job would run
        state.model.eval()(data().tokens).logits.sum()
    state.checkpoint = save_checkpoint(state.model, state.lm.tokenizer, state.plan, tmp_path / "c")
    healer = QLoRA(**{**COMMON, "steps": 1, "lr": 1e-3}, **LORA)
    assert healer.wants_checkpoint()
    model = healer.student(state)
    assert "Linear4bit" in {type(m).__name__ for m in model.modules()}
    healer.train(model, data(), tmp_path / "loss.csv")  # one step: LoRA's B is no longer 0
    model.train()
    model(input_ids=data().tokens, labels=data().tokens).loss.backward()
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert len(lora) == 2 * 3 * 6  # A and B of 3 MLP projections in 6 blocks
    for name, p in lora.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_lora_is_evaluated_merged_with_the_same_outputs(tmp_path):
    """``eval_merged`` (the default): the evaluated model has no LoRA layers and gives the
    adapter model's logits to float32 rounding; ``merge`` also saves a checkpoint."""
    state = job(tmp_path, "mistral")
    healer = LoRA(**{**COMMON, "steps": 4}, **LORA, merge=True)
    merged, result = healer.heal(state, data())
    assert result.evaluated == "merged" and "lora_" not in str(list(merged.named_modules()))
    from peft import PeftModel

    base = copy.deepcopy(job(tmp_path / "b", "mistral").model)
    adapter = PeftModel.from_pretrained(base, result.saved["adapter"]).eval()
    saved = AutoModelForCausalLM.from_pretrained(result.saved["merged"]).eval()
    ids = data(2, 20).tokens
    with torch.no_grad():
        a, b, c = adapter(ids).logits, merged(ids).logits, saved(ids).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)  # merging adds B @ A into W
    torch.testing.assert_close(b, c, atol=0, rtol=0)
    # the metrics: loss and perplexity of held-out tokens, merged vs the adapter as trained
    from layerprune.evaluate.perplexity import Windows, perplexity

    stream = torch.randint(0, 256, (400,), generator=torch.Generator().manual_seed(1))
    unmerged = perplexity(adapter, stream, Windows(64, 64))
    merged_ppl = perplexity(merged, stream, Windows(64, 64))
    assert abs(merged_ppl.loss - unmerged.loss) < 1e-4
    assert merged_ppl.perplexity == pytest.approx(unmerged.perplexity, rel=1e-4)


def test_killed_run_resumes_from_its_checkpoint(tmp_path):
    kw = {**COMMON, "steps": 6, "checkpoint_every": 2}

    def fresh(folder):
        state = job(folder)
        healer = LoRA(**kw, **LORA)
        return healer, healer.student(state)

    healer, ref_model = fresh(tmp_path / "a")
    reference = healer.train(ref_model, data(), tmp_path / "ref.csv")

    healer, model = fresh(tmp_path / "b")
    calls = {"n": 0}
    forward = model.forward

    def dies_at_step_5(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # SIGKILL stand-in: after the step-4 snapshot
        return forward(*a, **k)

    model.forward = dies_at_step_5
    with pytest.raises(KeyboardInterrupt):
        healer.train(model, data(), tmp_path / "run.csv", tmp_path / "resume")
    assert (tmp_path / "resume" / "latest.pt").exists()

    healer, again = fresh(tmp_path / "c")
    result = healer.train(again, data(), tmp_path / "run.csv", tmp_path / "resume")
    assert result.resumed_from == 4
    assert result.last_loss == pytest.approx(reference.last_loss, rel=1e-5)
    assert (tmp_path / "run.csv").read_text().count("\n") == 7  # header + steps 1..6
    assert not (tmp_path / "resume").exists()  # cosine: finished, nothing left to resume
    for (_, p), (_, q) in zip(trainable(again).items(), trainable(ref_model).items(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


def test_constant_rate_run_continues_a_shorter_one_to_the_same_weights(tmp_path):
    """A budget sweep: steps=3 then steps=7 (resumed from the 3-step run's end state) ends
    where one 7-step run ends; the resume folder does not depend on ``steps``."""
    kw = {**COMMON, "schedule": "constant", "warmup_steps": 2}

    def run(folder, steps, resume):
        state = job(folder)
        healer = LoRA(**{**kw, "steps": steps}, **{**LORA, "lora_dropout": 0.1})
        model = healer.student(state)
        torch.manual_seed(0)
        return healer.train(model, data(), folder / "loss.csv", resume), trainable(model)

    _, straight = run(tmp_path / "a", 7, tmp_path / "r1")
    short, _ = run(tmp_path / "b", 3, tmp_path / "r2")
    assert (tmp_path / "r2" / "final-0000003.pt").exists()
    longer, continued = run(tmp_path / "c", 7, tmp_path / "r2")
    assert short.resumed_from == 0 and longer.resumed_from == 3
    for name, p in straight.items():
        torch.testing.assert_close(continued[name], p, atol=1e-6, rtol=1e-5)
    state = job(tmp_path / "d")
    a = resume_folder(LoRA(**{**kw, "steps": 3}, **LORA), state, "t")
    b = resume_folder(LoRA(**{**kw, "steps": 9}, **LORA), state, "t")
    c = resume_folder(LoRA(**{**COMMON, "steps": 9}, **LORA), state, "t")  # cosine: steps count
    assert a == b != c


# -- distillation ------------------------------------------------------------------------


def _kd_by_hand(student, teacher, T, mask):
    """KL(softmax(t/T) || softmax(s/T)) * T^2 by the definition, position by position."""
    total, count = 0.0, 0
    for b in range(student.shape[0]):
        for p in range(student.shape[1]):
            if not mask[b, p]:
                continue
            pt = torch.softmax(teacher[b, p].double() / T, -1)
            ps = torch.softmax(student[b, p].double() / T, -1)
            total += float((pt * (pt.log() - ps.log())).sum()) * T * T
            count += 1
    return total / count


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_kd_loss_equals_a_hand_computation(family, temperature, tmp_path):
    """On the models' real logits (Gemma3's soft-capped), with padding masked out."""
    teacher = load_model(tiny_config(family)).model
    student = job(tmp_path, family, removed=(2, 3)).model
    if family == "gemma3_text":  # Gemma's final logit soft-capping, tight enough to bite
        teacher.config.final_logit_softcapping = student.config.final_logit_softcapping = 0.5
    ids = data(3, 12).tokens
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[1, 8:] = mask[2, 5:] = False  # right padding
    with torch.no_grad():
        s, t = student(ids).logits, teacher(ids).logits
    if family == "gemma3_text":
        assert t.abs().max() < 0.5  # the capped logits are the ones distilled
    got = kd_loss(s, t, temperature, mask)
    # float32 against float64: the KL sums differences of nearly equal log-probabilities
    assert float(got) == pytest.approx(_kd_by_hand(s, t, temperature, mask), rel=1e-4, abs=1e-7)
    assert float(kd_loss(t, t, temperature)) == pytest.approx(0.0, abs=1e-6)
    # top-k with k = vocabulary is the whole KL
    logp = F.log_softmax(t.float() / temperature, -1)
    top, idx = logp.topk(logp.shape[-1], -1)
    assert float(topk_kd_loss(s, top, idx, temperature, mask)) == pytest.approx(
        float(got), rel=1e-5
    )


def test_hidden_loss_by_hand():
    s, t = [torch.ones(2, 3, 4)], [2 * torch.ones(2, 3, 4)]
    assert float(hidden_loss(s, t)) == pytest.approx(1 / 4)  # |1-2|^2 / 2^2


def _spy_teacher(monkeypatch) -> list:
    """Record every teacher the KD healer loads."""
    import layerprune.heal.kd as kd

    seen, load = [], kd.frozen_teacher
    monkeypatch.setattr(kd, "frozen_teacher", lambda *a: seen.append(load(*a)) or seen[-1])
    return seen


def test_kd_trains_only_the_student_and_leaves_the_teacher_unchanged(tmp_path, monkeypatch):
    seen = _spy_teacher(monkeypatch)
    state = job(tmp_path)
    healer = KD(**{**COMMON, "steps": 3}, **LORA, hidden_weight=0.5, ce_weight=0.1)
    before = copy.deepcopy(load_model(tiny_config("llama")).model.state_dict())
    model, result = healer.heal(state, data())
    (teacher,) = seen  # the teacher the loss used
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    for name, tensor in teacher.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert set(result.last_parts) == {"kd", "ce", "hidden"} and result.last_loss > 0
    assert result.last_loss < result.first_loss
    rows = (tmp_path / "healing_loss.csv").read_text().splitlines()
    assert rows[0] == "step,loss,lr,ce,hidden,kd" and len(rows) == 4


@pytest.mark.slow
def test_kd_with_cached_teacher_topk_reuses_the_file(tmp_path, monkeypatch):
    seen = _spy_teacher(monkeypatch)
    healer = KD(**{**COMMON, "steps": 2}, **LORA, teacher_topk=8)
    first = healer.heal(job(tmp_path / "a"), data())[1]
    files = list((paths.home() / "teacher").glob("topk-*.pt"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    again = KD(**{**COMMON, "steps": 2}, **LORA, teacher_topk=8)
    second = again.heal(job(tmp_path / "b"), data())[1]
    assert files[0].stat().st_mtime_ns == stamp  # read, not recomputed
    assert len(seen) == 1  # the second job loads no teacher at all
    assert math.isclose(first.last_loss, second.last_loss, rel_tol=1e-6)


def test_plugin_healer_from_tests_runs_through_a_job(tmp_path):
    """A healer class + YAML outside ``src/`` (``tests/toy_healer.py``) heals a job's model,
    is recorded, and keys the request cache; a misspelt setting names itself."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from layerprune import pipeline
    from layerprune.config import validate
    from layerprune.errors import LayerpruneError
    from tests.conftest import compose

    conf = Path(__file__).parent / "conf"
    base = [f"hydra.searchpath=[file://{conf}]", "model=tiny-llama", "benchmark=none"]
    base.append("pruning_method=last_layers")  # no scan: no text asset needed
    cfg = compose([*base, "healing=scale_head", "healing.factor=3.0", "fraction=0.25"])
    checked = validate(cfg)
    assert type(checked.healing).__module__ == "tests.toy_healer"
    r = pipeline.run(checked, OmegaConf.to_container(cfg), tmp_path)
    assert r.healing["method"] == "scale_head" and r.plan["removed_blocks"]
    reference = load_model(tiny_config("llama")).model.lm_head.weight
    healed = pipeline.stages(checked)  # the stages name no healer: built from the config
    assert any(type(s.healer).__name__ == "ScaleHead" for s in healed if hasattr(s, "healer"))
    state = job(tmp_path / "j", removed=())
    model, _ = checked.healing.heal(state, None)
    torch.testing.assert_close(model.lm_head.weight, 3.0 * reference)
    with pytest.raises(LayerpruneError, match="factr"):
        validate(compose([*base, "healing=scale_head", "+healing.factr=1"]))


@pytest.mark.slow
@needs_assets("text")
def test_kd_job_killed_with_sigkill_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """A real ``kill -9`` of a distillation job mid-training; the same command again resumes
    from the last snapshot and ends with the adapter of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from safetensors.torch import load_file

    real_text = ASSET_HOME / "text"  # the built asset (the autouse fixture moved LAYERPRUNE_HOME)
    cmd = [
        str(Path(sys.executable).parent / "layerprune"),
        "model=tiny-llama",
        "pruning_method=last_layers",
        "healing=kd",
        "healing.steps=200",
        "healing.batch_size=2",
        "healing.seq_len=64",
        "healing.checkpoint_every=5",
        "benchmark=none",
        "speed=none",
    ]

    def env(home: Path) -> dict:
        home.mkdir(parents=True, exist_ok=True)
        if not (home / "text").exists():
            (home / "text").symlink_to(real_text)
        return {**os.environ, "LAYERPRUNE_HOME": str(home)}

    def adapter(folder: Path) -> dict:
        return load_file(folder / "adapter" / "adapter_model.safetensors")

    # each run its own store: the reference's stored results must not answer the second run
    ref = subprocess.run(
        [*cmd, "hydra.run.dir=ref", "store_dir=store1"],
        cwd=tmp_path,
        env=env(tmp_path / "h1"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert ref.returncode == 0, ref.stderr[-3000:]

    home = tmp_path / "h2"
    run = [*cmd, "hydra.run.dir=run", "store_dir=store2"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    proc = subprocess.Popen(run, cwd=tmp_path, env=env(home), **quiet)
    deadline = time.time() + 600
    while not list(home.glob("heal/*/latest.pt")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a few more steps past the first snapshot
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "run" / "results.json").exists()  # killed mid-training
    again = subprocess.run(
        run, cwd=tmp_path, env=env(home), capture_output=True, text=True, timeout=900
    )
    assert again.returncode == 0, again.stderr[-3000:]
    healing = json.loads((tmp_path / "run" / "results.json").read_text())["healing"]
    assert healing["resumed_from"] > 0 and healing["steps"] == 200
    a, b = adapter(tmp_path / "ref"), adapter(tmp_path / "run")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=1e-5)


# -- healing that fits: checkpointing, the QLoRA reload, the 4-bit teacher, master copies --


def test_gradient_checkpointing_trains_the_same_weights_and_saves_less(tmp_path):
    """LoRA with dropout: the recomputed forward replays the RNG, so the weights after 4
    steps are those of the run without checkpointing; what forward keeps for backward is
    much smaller."""
    from layerprune.heal.train import checkpointing
    from layerprune.memory.measure import saved_for_backward

    def run(on: bool):
        state = job(tmp_path / str(on))
        healer = LoRA(
            **{**COMMON, "steps": 4}, **{**LORA, "lora_dropout": 0.1}, gradient_checkpointing=on
        )
        model = healer.student(state)
        torch.manual_seed(0)
        healer.train(model, data(), tmp_path / "loss.csv")
        return model, trainable(model)

    plain, weights = run(False)
    ckpt, weights_ckpt = run(True)
    assert weights.keys() == weights_ckpt.keys()
    for name, w in weights.items():
        torch.testing.assert_close(weights_ckpt[name], w, atol=1e-6, rtol=1e-5)
    assert not ckpt.get_base_model().is_activation_checkpointing  # switched off after training
    ids = data(4, 32).tokens
    plain.train()
    without = saved_for_backward(plain, ids)
    with checkpointing(plain, True):
        with_it = saved_for_backward(plain, ids)
    assert with_it < 0.3 * without


def test_gradient_checkpointing_and_max_epochs_are_in_no_key(tmp_path):
    """Neither changes the trained weights: resume folder, request-cache identity and the run
    store's job key are the same; ``teacher_4bit`` enters the keys only when set."""
    from layerprune.store import job_key

    state = job(tmp_path)
    a = LoRA(**COMMON, **LORA)
    b = LoRA(**{**COMMON, "max_epochs": 3.0}, **LORA, gradient_checkpointing=True)
    assert resume_folder(a, state, "t") == resume_folder(b, state, "t")
    assert a.identity() == b.identity() and a.training_identity() == b.training_identity()
    base = {"seed": 0, "healing": {"name": "kd", "steps": 40}}
    same = {**base, "healing": {**base["healing"], "gradient_checkpointing": True}}
    same["healing"].update(max_epochs=6, teacher_4bit=False)
    other = {**base, "healing": {**base["healing"], "teacher_4bit": True}}
    assert job_key(base) == job_key(same) != job_key(other)
    assert KD(teacher_4bit=True).training_identity() != KD().training_identity()
    assert "teacher_4bit" not in KD().identity()


def test_more_healing_tokens_than_the_text_holds_is_one_line(tmp_path, monkeypatch):
    """qlora_gromov's 82M tokens on the offline C4 healing split; nothing is loaded first;
    ``max_epochs`` allows repeated passes."""
    from layerprune.config import validate
    from layerprune.errors import LayerpruneError
    from tests.conftest import compose

    healer = validate(compose(["model=tiny-llama", "healing=qlora_gromov"])).healing
    assert healer.gradient_checkpointing and healer.max_epochs == 1.0
    text = HealingText(torch.zeros(172, 1024, dtype=torch.long), "c4/healing")
    monkeypatch.setattr(QLoRA, "student", lambda *a: pytest.fail("loaded before the check"))
    with pytest.raises(LayerpruneError) as e:
        healer.heal(job(tmp_path), text)
    assert str(e.value) == (
        "healing=qlora needs 81,920,000 tokens (steps x batch x accumulation x seq_len); "
        "c4/healing holds 176,128 (0.2%): use a larger text source or allow repeated passes "
        "with healing.max_epochs=466"
    )
    small = LoRA(**{**COMMON, "steps": 5, "max_epochs": 1.0}, **LORA)  # 10 rows of 4
    with pytest.raises(LayerpruneError, match="needs 320 tokens.*holds 128 .40.0%.*=3$"):
        small.train(small.student(job(tmp_path / "b")), data(), tmp_path / "loss.csv")
    allowed = LoRA(**{**COMMON, "steps": 5, "max_epochs": 2.5}, **LORA)
    result = allowed.train(allowed.student(job(tmp_path / "c")), data(), tmp_path / "loss.csv")
    assert result.epochs == 2.5


@pytest.mark.slow
def test_qlora_frees_the_pruned_model_before_the_4bit_reload(tmp_path, monkeypatch):
    """No reference to the pruned in-memory model survives into ``load_4bit`` (a weakref is
    dead there); the reload lands on the model's device; training runs checkpointed."""
    import gc
    import weakref

    import transformers.modeling_utils as modeling_utils

    import layerprune.heal.lora as lora

    state = job(tmp_path)
    state.checkpoint = save_checkpoint(state.model, state.lm.tokenizer, state.plan, tmp_path / "c")
    pruned = weakref.ref(state.lm.model)
    seen, load = {}, lora.load_4bit

    def spy(folder, dtype, device_map):
        gc.collect()
        seen.update(alive=pruned() is not None, device_map=device_map)
        return load(folder, dtype, device_map)

    monkeypatch.setattr(lora, "load_4bit", spy)
    calls, checkpoint = [], modeling_utils.checkpoint
    monkeypatch.setattr(
        modeling_utils, "checkpoint", lambda *a, **k: calls.append(1) or checkpoint(*a, **k)
    )
    healer = QLoRA(**{**COMMON, "steps": 1, "lr": 1e-3}, **LORA)
    model, result = healer.heal(state, data())
    assert seen == {"alive": False, "device_map": {"": "cpu"}}
    assert state.lm.model is None and "Linear4bit" in {type(m).__name__ for m in model.modules()}
    assert len(calls) == 6  # each of the 6 kept blocks, recomputed in backward
    assert result.steps == 1


def test_qlora_reloads_where_the_model_was():
    """One device: that device (``cuda:1`` stays ``cuda:1``); split: accelerate's ``auto``."""
    from layerprune.heal.lora import reload_device_map

    model = torch.nn.Linear(2, 2)
    assert reload_device_map(model) == {"": "cpu"}
    model.hf_device_map = {"model.embed_tokens": 1, "model.layers.0": 1, "lm_head": 1}
    assert reload_device_map(model) == {"": "cpu"}  # from the weights' own device
    model.hf_device_map = {"model.embed_tokens": 0, "model.layers.0": 1, "lm_head": "cpu"}
    assert reload_device_map(model) == "auto"


def _saved_job(tmp_path, removed=(5, 6)) -> JobState:
    """A job whose model is a tiny checkpoint on disk (4-bit needs weights to quantise)."""
    from layerprune.config import ModelConfig

    lm = load_model(tiny_config("llama"))
    folder = save_checkpoint(lm.model, lm.tokenizer, PruningPlan("x"), tmp_path / "tiny")
    config = ModelConfig(name="t", source="path", id=str(folder), dtype="float32", device="cpu")
    state = JobState(tmp_path, 0, 0.25, partial(load_model, config))
    state.lm = state.loader()
    state.num_blocks = 8
    state.plan = PruningPlan("x", removed_blocks=list(removed), num_candidates=8)
    remove_blocks(state.lm.model, state.lm.adapter, list(removed))
    state.model = state.lm.model
    return state


@pytest.mark.slow
def test_kd_teacher_in_4bit(tmp_path, monkeypatch):
    """``teacher_4bit``: the teacher is the nf4 model the loader gives with
    ``load_in_4bit=True``; the first step's loss is KL(that teacher || the pruned model)."""
    seen = _spy_teacher(monkeypatch)
    state = _saved_job(tmp_path)
    healer = KD(**{**COMMON, "steps": 1}, **LORA, teacher_4bit=True)
    _, result = healer.heal(state, data())
    (teacher,) = seen
    assert "Linear4bit" in {type(m).__name__ for m in teacher.modules()}
    reference = state.loader(load_in_4bit=True).model.eval()
    pruned = _saved_job(tmp_path / "p").model.eval()
    rows = torch.randperm(4, generator=torch.Generator().manual_seed(0))[:2]  # step 1's rows
    ids = data().tokens[rows]
    with torch.no_grad():
        expected = kd_loss(pruned(ids).logits, reference(ids).logits)
    assert result.first_loss == pytest.approx(float(expected), rel=1e-5)


def test_kd_teacher_4bit_refuses_a_random_model(tmp_path):
    from layerprune.errors import LayerpruneError

    healer = KD(**COMMON, **LORA, teacher_4bit=True)
    with pytest.raises(LayerpruneError, match="teacher_4bit needs a checkpoint"):
        healer.heal(job(tmp_path), data())


def test_partial_trains_bf16_weights_as_a_float32_master_copy(tmp_path):
    """An AdamW step (lr 2e-5) below half a bf16 step of most weights rounds away in bf16
    (by hand); trained as a float32 master copy, 8 such steps move those weights, and the
    model is back in bf16 afterwards."""
    from dataclasses import replace

    config = replace(tiny_config("llama"), dtype="bfloat16")
    state = JobState(tmp_path, 0, 0.25, partial(load_model, config))
    state.lm = state.loader()
    lr = 2e-5
    healer = Partial(
        **{**COMMON, "lr": lr, "schedule": "constant", "max_grad_norm": 1e9}, partial_blocks=2
    )
    model = healer.student(state)
    before = trainable(model)
    healer.train(model, data(), tmp_path / "loss.csv")
    after = trainable(model)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    w = torch.cat([t.flatten() for t in before.values()])
    moved = torch.cat([(after[n] != t).flatten() for n, t in before.items()])
    one_step = (w.float() + lr).to(torch.bfloat16) == w  # a plain bf16 update is lost
    assert one_step.float().mean() > 0.5
    assert moved[one_step].float().mean() > 0.2


def test_snapshots_keep_the_cuda_rng(tmp_path, monkeypatch):
    """With CUDA: each device's generator is saved and restored; a snapshot without it (an
    older one) still loads; another device count leaves the generators alone."""
    from layerprune.heal.train import _restore, _Run, _snapshot

    states, restored = [torch.arange(4, dtype=torch.uint8)], []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: states)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)

    def run() -> _Run:
        model = torch.nn.Linear(2, 2)
        opt = torch.optim.AdamW(model.parameters())
        return _Run(model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), [])

    _snapshot(tmp_path / "latest.pt", run(), 3)
    assert _restore(tmp_path, 5, run()) == 3
    assert len(restored) == 1 and torch.equal(restored[0][0], states[0])
    old = torch.load(tmp_path / "latest.pt", weights_only=False)
    del old["cuda_rng"]
    torch.save(old, tmp_path / "latest.pt")
    assert _restore(tmp_path, 5, run()) == 3 and len(restored) == 1
    _snapshot(tmp_path / "latest.pt", run(), 3)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert _restore(tmp_path, 5, run()) == 3 and len(restored) == 1
