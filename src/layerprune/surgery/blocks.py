"""Delete whole blocks for real and save a plain HF checkpoint that vanilla transformers loads."""

from __future__ import annotations

from pathlib import Path

import torch

from layerprune import atomic
from layerprune.models.adapter import BlockAdapter
from layerprune.plan import PruningPlan

PLAN_FILE = "pruning_plan.json"


def remove_blocks(model: torch.nn.Module, adapter: BlockAdapter, removed: list[int]) -> None:
    """Drop blocks ``removed`` (original indices); the adapter renumbers what is left."""
    num_blocks = len(adapter.blocks(model))
    gone = set(removed)
    kept = [i for i in range(num_blocks) if i not in gone]
    adapter.keep_blocks(model, kept)


def save_checkpoint(model: torch.nn.Module, tokenizer, plan: PruningPlan, folder: Path) -> Path:
    """``save_pretrained`` + tokenizer + ``pruning_plan.json``, written into place atomically."""
    with atomic.directory(Path(folder)) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic.write_json(tmp / PLAN_FILE, plan.to_dict())
    return Path(folder)
