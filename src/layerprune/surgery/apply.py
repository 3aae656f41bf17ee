"""A plan applied to a model: the surgery the plan alone decides."""

from __future__ import annotations

import torch

from layerprune.models.adapter import BlockAdapter
from layerprune.plan import PruningPlan
from layerprune.surgery.blocks import remove_blocks
from layerprune.surgery.sublayers import prune_sublayers


def apply_plan(model: torch.nn.Module, adapter: BlockAdapter, plan: PruningPlan) -> bool:
    """Remove what ``plan`` says, in place: only whole blocks -> deletion (a plain HF model);
    any sublayer -> stand-ins (blocks that lose both are deleted). Returns whether sublayers
    were removed (the checkpoint then needs its own modeling file)."""
    sublayers = bool(plan.removed_attention or plan.removed_mlp)
    if sublayers:
        attention = plan.removed_attention + plan.removed_blocks
        prune_sublayers(model, adapter, attention, plan.removed_mlp + plan.removed_blocks)
    else:
        remove_blocks(model, adapter, plan.removed_blocks)
    return sublayers
