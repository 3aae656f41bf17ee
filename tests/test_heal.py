"""Healing: LoRA learns, QLoRA after an eval pass still gets gradients, merge == unmerged,
a killed run resumes where its last checkpoint left off."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from layerprune.config import HealingConfig
from layerprune.heal import attach_trainable, heal, train
from layerprune.models.load import load_model
from layerprune.plan import PruningPlan
from layerprune.surgery.blocks import remove_blocks, save_checkpoint
from tests.conftest import tiny_config


def settings(method: str, **kw) -> HealingConfig:
    base = dict(
        name=method,
        steps=8,
        batch_size=2,
        grad_accum=1,
        lr=1e-2,
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        lora_rank=4,
        lora_alpha=8.0,
        lora_dropout=0.0,
        lora_targets=["gate_proj", "up_proj", "down_proj"],
        partial_blocks=2,
        checkpoint_every=0,
    )
    base.update(kw)
    return HealingConfig(**base)


def data(n: int = 4, length: int = 32) -> torch.Tensor:
    """Learnable text: each row cycles through a short alphabet (random tokens are not)."""
    return torch.stack([(torch.arange(length) + 3 * i) % 7 + 97 for i in range(n)])


def heal_saved(lm, s: HealingConfig, out, folder, merge: bool = False):
    """``heal`` of a tiny model saved at ``folder``, on ``data()``, in float32."""
    s.merge = merge
    return heal(lm.model, lm.tokenizer, lm.adapter, s, data(), out, folder, None, torch.float32)


@pytest.mark.parametrize("method", ["lora", "partial"])
def test_training_lowers_the_loss(method, tmp_path):
    lm = load_model(tiny_config("llama"))
    model = attach_trainable(lm.model, settings(method), lm.adapter)
    result = train(model, data(), settings(method), tmp_path / "loss.csv")
    assert result.last_loss < result.first_loss - 0.3  # nats; random-weight start ~5.5
    rows = (tmp_path / "loss.csv").read_text().splitlines()
    assert rows[0] == "step,loss,lr" and len(rows) == 9


def test_partial_trains_only_the_last_blocks_and_head():
    lm = load_model(tiny_config("qwen2"))
    model = attach_trainable(lm.model, settings("partial", partial_blocks=2), lm.adapter)
    trainable = {
        n.split(".")[2]
        for n, p in model.named_parameters()
        if p.requires_grad and n.startswith("model.layers.")
    }
    assert trainable == {"6", "7"}
    assert model.lm_head.weight.requires_grad and not model.model.embed_tokens.weight.requires_grad


def test_qlora_after_an_eval_pass_gets_gradients(tmp_path):
    lm = load_model(tiny_config("llama"))
    remove_blocks(lm.model, lm.adapter, [5, 6])
    with torch.no_grad():  # an evaluation of the pruned model, as a sweep job would run
        lm.model.eval()(data()).logits.sum()
    folder = save_checkpoint(lm.model, lm.tokenizer, PruningPlan("x", None, 0, 8), tmp_path / "c")
    s = settings("qlora", steps=1, lr=1e-3)
    model, result, saved = heal_saved(lm, s, tmp_path, folder)
    assert "Linear4bit" in {type(m).__name__ for m in model.modules()}
    model.train()
    model(input_ids=data(), labels=data()).loss.backward()
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert len(lora) == 2 * 3 * 6  # A and B of 3 MLP projections in 6 blocks
    for name, p in lora.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_merged_equals_unmerged(tmp_path):
    lm = load_model(tiny_config("mistral"))
    folder = save_checkpoint(lm.model, lm.tokenizer, PruningPlan("x", None, 0, 8), tmp_path / "c")
    model, _, saved = heal_saved(lm, settings("lora", steps=4), tmp_path, folder, merge=True)
    merged = AutoModelForCausalLM.from_pretrained(saved["merged"]).eval()
    ids = data(2, 20)
    with torch.no_grad():
        a, b = model.eval()(ids).logits, merged(ids).logits
    # merging adds B @ A into W: only float32 rounding differs
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert (tmp_path / "adapter" / "adapter_config.json").exists()


def test_killed_run_resumes_from_its_checkpoint(tmp_path):
    s = settings("lora", steps=6, checkpoint_every=2)

    def fresh():
        lm = load_model(tiny_config("llama"))
        return attach_trainable(lm.model, s, lm.adapter)

    reference = train(fresh(), data(), s, tmp_path / "ref.csv")
    ref_model = fresh()
    train(ref_model, data(), s, tmp_path / "ref2.csv")

    model = fresh()
    calls = {"n": 0}
    forward = model.forward

    def dies_at_step_5(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # SIGKILL stand-in: after the step-4 checkpoint
        return forward(*a, **k)

    model.forward = dies_at_step_5
    with pytest.raises(KeyboardInterrupt):
        train(model, data(), s, tmp_path / "run.csv", tmp_path / "resume")
    assert (tmp_path / "resume" / "resume.pt").exists()

    again = fresh()
    result = train(again, data(), s, tmp_path / "run.csv", tmp_path / "resume")
    assert result.resumed_from == 4
    assert result.last_loss == pytest.approx(reference.last_loss, rel=1e-5)
    assert (tmp_path / "run.csv").read_text().count("\n") == 7  # header + steps 1..6
    assert not (tmp_path / "resume").exists()  # finished: the resume state is cleared
    for (_, p), (_, q) in zip(again.named_parameters(), ref_model.named_parameters(), strict=True):
        if p.requires_grad:
            torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


def test_qlora_on_a_sublayer_pruned_model(tmp_path):
    """FinerCut + QLoRA: the 4-bit base is rebuilt through the checkpoint's modeling file."""
    from layerprune.surgery.sublayers import prune_sublayers, save_sublayer_checkpoint

    lm = load_model(tiny_config("qwen2"))
    prune_sublayers(lm.model, lm.adapter, attention=[0, 3], mlp=[5])
    folder = save_sublayer_checkpoint(
        lm.model, lm.tokenizer, PruningPlan("finercut", "js", 0, 16), tmp_path / "c"
    )
    model, result, _ = heal_saved(lm, settings("qlora", steps=2), tmp_path, folder)
    assert type(model).__name__ == "LayerprunedForCausalLM" and result.steps == 2
    assert "SkippedAttention" in {type(m).__name__ for m in model.modules()}
