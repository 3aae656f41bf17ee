"""Healing: a little fine-tuning after pruning (Gromov et al.: QLoRA on C4, MLP projections).

Methods: ``lora`` (peft LoRA on the model as it is), ``qlora`` (the pruned model is saved and
reloaded *fresh* as a bitsandbytes nf4 base before LoRA: an eval-mode forward on a 4-bit model
repacks its weights so that training afterwards gets wrong gradients, ASSETS.md), ``partial``
(train the last k surviving blocks + lm_head, Lu et al. 2024). One plain loop serves all three:
AdamW, warm-up + cosine schedule, gradient accumulation, bf16 autocast on CUDA, fp32 on CPU,
gradient clipping, a loss CSV, and resumable checkpoints of the trainable state.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from layerprune import atomic
from layerprune.config import HealingConfig
from layerprune.errors import LayerpruneError
from layerprune.models.adapter import BlockAdapter

log = logging.getLogger(__name__)


@dataclass
class HealResult:
    method: str
    steps: int
    tokens: int
    first_loss: float
    last_loss: float
    seconds: float
    trainable_params: int
    resumed_from: int = 0

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def load_4bit(folder: Path, dtype: torch.dtype) -> torch.nn.Module:
    """A fresh nf4 model from a saved (pruned) checkpoint, for QLoRA."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )
    device_map = {"": 0} if torch.cuda.is_available() else {"": "cpu"}
    # a sublayer-pruned checkpoint (FinerCut) brings its own modeling file
    trust = (Path(folder) / "modeling_layerprune.py").exists()
    return AutoModelForCausalLM.from_pretrained(
        folder,
        quantization_config=quant,
        dtype=dtype,
        device_map=device_map,
        trust_remote_code=trust,
    )


def attach_trainable(model: torch.nn.Module, s: HealingConfig, adapter: BlockAdapter):
    """Wrap with LoRA (lora/qlora) or unfreeze the last blocks + lm_head (partial)."""
    if s.name in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if s.name == "qlora":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        config = LoraConfig(
            r=s.lora_rank,
            lora_alpha=s.lora_alpha,
            lora_dropout=s.lora_dropout,
            target_modules=list(s.lora_targets),
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, config)
    if s.name == "partial":
        for p in model.parameters():
            p.requires_grad_(False)
        blocks = adapter.blocks(model)
        for block in list(blocks)[-s.partial_blocks :]:
            for p in block.parameters():
                p.requires_grad_(True)
        for p in model.get_output_embeddings().parameters():
            p.requires_grad_(True)
        return model
    raise LayerpruneError(f"unknown healing method '{s.name}'")


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _save_resume(folder: Path, model, opt, sched, step: int, losses: list) -> None:
    state = {
        "step": step,
        "trainable": _trainable_state(model),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "losses": losses,
        "rng": torch.get_rng_state(),
    }
    tmp = folder / f".step-{step}.pt"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, tmp)
    tmp.replace(folder / "resume.pt")  # atomic: a kill never leaves half a checkpoint


def train(
    model: torch.nn.Module,
    data: torch.Tensor,
    s: HealingConfig,
    loss_csv: Path,
    resume_dir: Path | None = None,
    seed: int = 0,
) -> HealResult:
    """Train the trainable parameters of ``model`` for ``s.steps`` optimiser steps on ``data``
    ([N, seq_len] token ids, cycled if shorter than needed)."""
    from transformers import get_cosine_schedule_with_warmup

    device = next(p.device for p in model.parameters())
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise LayerpruneError("healing has no trainable parameters")
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, s.warmup_steps, s.steps)
    losses: list[tuple[int, float, float]] = []
    start_step = 0
    resume_file = resume_dir / "resume.pt" if resume_dir else None
    if resume_file and resume_file.exists():
        state = torch.load(resume_file, weights_only=False)
        named = dict(model.named_parameters())
        with torch.no_grad():
            for n, t in state["trainable"].items():
                named[n].copy_(t.to(named[n].device))
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        losses, start_step = state["losses"], state["step"]
        torch.set_rng_state(state["rng"])
        log.info("healing resumes at step %d of %d (%s)", start_step, s.steps, resume_file)

    gen = torch.Generator().manual_seed(seed)
    per_step = s.batch_size * s.grad_accum
    order = torch.cat(
        [
            torch.randperm(len(data), generator=gen)
            for _ in range(math.ceil(s.steps * per_step / len(data)))
        ]
    )
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None
    model.train()
    begin = time.perf_counter()
    bar = tqdm(
        range(start_step, s.steps),
        desc=f"heal ({s.name})",
        unit="step",
        initial=start_step,
        total=s.steps,
    )
    for step in bar:
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(s.grad_accum):
            idx = order[step * per_step + micro * s.batch_size :][: s.batch_size]
            batch = data[idx].to(device)
            if autocast:
                with autocast:
                    loss = model(input_ids=batch, labels=batch).loss / s.grad_accum
            else:
                loss = model(input_ids=batch, labels=batch).loss / s.grad_accum
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm)
        opt.step()
        sched.step()
        losses.append((step + 1, total, sched.get_last_lr()[0]))
        bar.set_postfix(loss=f"{total:.4f}")
        if resume_dir and s.checkpoint_every and (step + 1) % s.checkpoint_every == 0:
            _save_resume(resume_dir, model, opt, sched, step + 1, losses)
    model.eval()
    rows = "step,loss,lr\n" + "".join(f"{a},{b:.6f},{c:.3e}\n" for a, b, c in losses)
    atomic.write_text(loss_csv, rows)
    if resume_dir and resume_dir.exists():
        shutil.rmtree(resume_dir)  # finished: nothing left to resume
    return HealResult(
        method=s.name,
        steps=s.steps,
        tokens=s.steps * per_step * data.shape[1],
        first_loss=losses[0][1] if losses else float("nan"),
        last_loss=losses[-1][1] if losses else float("nan"),
        seconds=round(time.perf_counter() - begin, 3),
        trainable_params=sum(p.numel() for p in params),
        resumed_from=start_step,
    )


def merge_adapter(pruned: Path, adapter_dir: Path, out: Path, dtype: torch.dtype) -> Path:
    """Full-precision pruned model + LoRA adapter, merged: a checkpoint vanilla HF loads."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(pruned, dtype=dtype)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    with atomic.directory(out) as tmp:
        merged.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(pruned).save_pretrained(tmp)
    return out


def heal(
    model: torch.nn.Module,
    tokenizer,
    adapter: BlockAdapter,
    s: HealingConfig,
    data: torch.Tensor,
    out_dir: Path,
    pruned_checkpoint: Path,
    resume_dir: Path | None,
    dtype: torch.dtype,
    seed: int = 0,
) -> tuple[torch.nn.Module, HealResult, dict[str, str]]:
    """Heal ``model`` as the ``healing`` config says; return the model to evaluate (as
    trained), the result, saved paths.

    ``pruned_checkpoint`` must hold the pruned model when ``s.name == "qlora"`` or ``s.merge``.
    """
    saved: dict[str, str] = {}
    if s.name == "qlora":
        del model  # the 4-bit base is loaded fresh from disk, never reused after an eval pass
        model = load_4bit(pruned_checkpoint, dtype)
    model = attach_trainable(model, s, adapter)
    result = train(model, data, s, out_dir / "healing_loss.csv", resume_dir, seed)
    if s.name in ("lora", "qlora"):
        model.save_pretrained(out_dir / "adapter")
        saved["adapter"] = str(out_dir / "adapter")
        if s.merge:
            merged = merge_adapter(
                pruned_checkpoint, out_dir / "adapter", out_dir / "merged", dtype
            )
            saved["merged"] = str(merged)
        model = model.base_model.model  # the HF model with LoRA layers in place: evaluate as is
    elif s.merge:
        with atomic.directory(out_dir / "merged") as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        saved["merged"] = str(out_dir / "merged")
    return model, result, saved
