"""LoRA, QLoRA and partial fine-tuning: the language-modelling-loss healers.

- ``lora``: peft LoRA adapters (on the MLP projections by default, as Gromov et al.) on the
  pruned model as it is; evaluated merged into a copy (``merge_and_unload``: plain matmuls,
  the same numbers to float rounding) unless ``eval_merged=false``.
- ``qlora``: the pruned model is saved and reloaded *fresh* as a bitsandbytes nf4 base before
  LoRA: an eval-mode forward on a 4-bit model repacks its weights so that training afterwards
  gets wrong gradients (seen with bitsandbytes 0.50 on CPU). The pruned in-memory model is
  freed first (the job keeps no reference to it: ``job.lm.model`` is None afterwards), and the
  reload lands where it was: its device (``cuda:N``), or split by ``device_map="auto"`` when it
  was split. Evaluated as trained (merging into nf4 weights would re-round them).
- ``partial`` (Lu et al. 2024): train the last k surviving blocks + ``lm_head`` (bf16 / fp16
  weights as a float32 master copy, cast back after training: heal/train.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from layerprune import atomic
from layerprune.errors import LayerpruneError
from layerprune.heal.train import FineTune
from layerprune.models.adapter import BlockAdapter
from layerprune.models.load import free_memory

if TYPE_CHECKING:
    from layerprune.job import JobState

MLP_PROJECTIONS = ["gate_proj", "up_proj", "down_proj"]


def attach_lora(model: torch.nn.Module, rank: int, alpha: float, dropout: float, targets):
    """``model`` wrapped with peft LoRA adapters on the ``targets`` projections."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(targets),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def attach_partial(model: torch.nn.Module, adapter: BlockAdapter, blocks: int) -> torch.nn.Module:
    """Freeze everything but the last ``blocks`` blocks and the LM head."""
    for p in model.parameters():
        p.requires_grad_(False)
    for block in list(adapter.blocks(model))[-blocks:]:
        for p in block.parameters():
            p.requires_grad_(True)
    for p in model.get_output_embeddings().parameters():
        p.requires_grad_(True)
    return model


def reload_device_map(model: torch.nn.Module) -> dict[str, str] | str:
    """Where QLoRA reloads ``model``: its device, or accelerate's ``"auto"`` split when
    ``model`` is split over several."""
    split = getattr(model, "hf_device_map", None)
    if split and len(set(split.values())) > 1:
        return "auto"
    return {"": str(next(model.parameters()).device)}


def release_pruned(job: JobState) -> None:
    """Drop the job's references to the pruned in-memory model and free it (module doc)."""
    job.lm.model = None
    job.model = None
    free_memory()


def load_4bit(
    folder: Path, dtype: torch.dtype, device_map: dict[str, str] | str
) -> torch.nn.Module:
    """A fresh nf4 model from a saved (pruned) checkpoint, for QLoRA, placed by ``device_map``."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )
    # a sublayer-pruned checkpoint (FinerCut) brings its own modeling file
    trust = (Path(folder) / "modeling_layerprune.py").exists()
    return AutoModelForCausalLM.from_pretrained(
        folder,
        quantization_config=quant,
        dtype=dtype,
        device_map=device_map,
        trust_remote_code=trust,
    )


def save_merged(model: torch.nn.Module, tokenizer, folder: Path) -> str:
    """A plain HF checkpoint of ``model`` (vanilla transformers loads it)."""
    with atomic.directory(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return str(folder)


@dataclass
class LoRA(FineTune):
    """LoRA on a full-precision base (module doc)."""

    name: str = "lora"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: list(MLP_PROJECTIONS))
    merge: bool = False  # also save a merged checkpoint that vanilla transformers loads
    eval_merged: bool = True  # evaluate the adapter merged into a copy (faster, same numbers)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lora_rank < 1:
            raise LayerpruneError(f"healing.lora_rank must be >= 1, got {self.lora_rank}")

    def student(self, job: JobState) -> torch.nn.Module:
        return self._lora(job.lm.model)

    def _lora(self, model: torch.nn.Module) -> torch.nn.Module:
        return attach_lora(
            model, self.lora_rank, self.lora_alpha, self.lora_dropout, self.lora_targets
        )

    def finish(self, model: torch.nn.Module, job: JobState) -> tuple[torch.nn.Module, dict]:
        """Save the adapter (and a merged checkpoint if ``merge``); evaluate merged."""
        out = {"adapter": str(job.out_dir / "adapter")}
        model.save_pretrained(job.out_dir / "adapter")
        merged = copy.deepcopy(model).merge_and_unload() if self.merge or self.eval_merged else None
        if self.merge:
            out["merged"] = self._save_merged(merged, job)
        if self.eval_merged:
            return merged.eval(), {"evaluated": "merged", **out}
        # the HF model with LoRA layers in place, evaluated as trained
        return model.base_model.model, {"evaluated": "as trained", **out}

    def _save_merged(self, merged: torch.nn.Module, job: JobState) -> str:
        return save_merged(merged, job.lm.tokenizer, job.out_dir / "merged")


@dataclass
class QLoRA(LoRA):
    """LoRA on a fresh nf4 reload of the saved pruned model (module doc)."""

    name: str = "qlora"
    eval_merged: bool = False  # merging into nf4 weights re-rounds them: evaluated as trained
    needs_checkpoint = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eval_merged:
            raise LayerpruneError(
                "healing=qlora is evaluated as trained (its 4-bit base + adapter): merging "
                "into nf4 weights re-rounds them; healing.merge=true saves a full-precision merge"
            )

    gradient_checkpointing: bool = True  # the GPU recipe: activations dominate at 7B+

    def student(self, job: JobState) -> torch.nn.Module:
        from peft import prepare_model_for_kbit_training

        device_map = reload_device_map(job.lm.model)
        release_pruned(job)
        # the 4-bit base is loaded fresh from disk, never used after an eval pass
        base = load_4bit(job.checkpoint, job.lm.dtype, device_map)
        # checkpointing is switched on by the training loop (train.checkpointing): non-
        # reentrant, so peft's hook making the embeddings' output require grad is not needed
        return self._lora(prepare_model_for_kbit_training(base, use_gradient_checkpointing=False))

    def _save_merged(self, merged: torch.nn.Module, job: JobState) -> str:
        """The adapter merged into the full-precision pruned checkpoint (not the nf4 base)."""
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(job.checkpoint, dtype=job.lm.dtype)
        full = PeftModel.from_pretrained(base, job.out_dir / "adapter").merge_and_unload()
        return save_merged(full, job.lm.tokenizer, job.out_dir / "merged")

    def finish(self, model: torch.nn.Module, job: JobState) -> tuple[torch.nn.Module, dict]:
        out = {"adapter": str(job.out_dir / "adapter")}
        model.save_pretrained(job.out_dir / "adapter")
        if self.merge:
            out["merged"] = self._save_merged(model, job)
        return model.base_model.model, {"evaluated": "as trained", **out}


@dataclass
class Partial(FineTune):
    """Fine-tune the last ``partial_blocks`` surviving blocks and the LM head (module doc)."""

    name: str = "partial"
    lr: float = 1e-4
    partial_blocks: int = 3
    merge: bool = False  # also save the trained model as a plain checkpoint

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.partial_blocks < 1:
            raise LayerpruneError(f"healing.partial_blocks must be >= 1, got {self.partial_blocks}")

    def student(self, job: JobState) -> torch.nn.Module:
        return attach_partial(job.lm.model, job.lm.adapter, self.partial_blocks)

    def finish(self, model: torch.nn.Module, job: JobState) -> tuple[torch.nn.Module, dict]:
        out = {"evaluated": "as trained"}
        if self.merge:
            out["merged"] = save_merged(model, job.lm.tokenizer, job.out_dir / "merged")
        return model, out
