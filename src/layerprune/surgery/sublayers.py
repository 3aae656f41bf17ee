"""Sublayer surgery (FinerCut): removed attention / MLP sublayers hold no weights and cost nothing.

A block that loses both sublayers is deleted outright (``BlockAdapter.keep_blocks``); other
removed sublayers are replaced by the stand-ins of ``surgery/skip.py``. The checkpoint is a
normal HF folder whose config lists the stand-ins and whose ``auto_map`` points at a generated
``modeling_layerprune.py`` (a copy of ``skip.py`` plus a subclass of the family's class that
installs them), so ``AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)``
rebuilds exactly this model, and so does layerprune's loader.
"""

from __future__ import annotations

from pathlib import Path

import torch

from layerprune import atomic
from layerprune.models.adapter import BlockAdapter
from layerprune.plan import PruningPlan
from layerprune.surgery import skip
from layerprune.surgery.blocks import PLAN_FILE

MODELING_FILE = "modeling_layerprune.py"
CLASS_NAME = "LayerprunedForCausalLM"

_SUBCLASS = '''

from {module} import {base} as _Base  # noqa: E402


class {name}(_Base):
    """{base} with the sublayers listed in its config replaced by stand-ins (layerprune)."""

    def __init__(self, config):
        super().__init__(config)
        skip_sublayers(self.model.layers, config.layerprune_sublayer_names,
                       config.layerprune_removed_attention, config.layerprune_removed_mlp)
'''


def prune_sublayers(
    model: torch.nn.Module, adapter: BlockAdapter, attention: list[int], mlp: list[int]
) -> tuple[list[int], list[int]]:
    """Remove sublayers (original block indices). Returns the stand-in indices in the new
    numbering (after deleting blocks that lost both sublayers)."""
    num_blocks = len(adapter.blocks(model))
    gone = set(attention) & set(mlp)
    kept = [i for i in range(num_blocks) if i not in gone]
    new = {old: j for j, old in enumerate(kept)}
    if gone:
        adapter.keep_blocks(model, kept)
    new_attn = sorted(new[i] for i in attention if i not in gone)
    new_mlp = sorted(new[i] for i in mlp if i not in gone)
    blocks = adapter.blocks(model)
    skip.skip_sublayers(blocks, (adapter.attn_name, adapter.mlp_name), new_attn, new_mlp)
    config = model.config
    config.layerprune_removed_attention = sorted(
        set(getattr(config, "layerprune_removed_attention", [])) | set(new_attn)
    )
    config.layerprune_removed_mlp = sorted(
        set(getattr(config, "layerprune_removed_mlp", [])) | set(new_mlp)
    )
    config.layerprune_sublayer_names = [adapter.attn_name, adapter.mlp_name]
    return new_attn, new_mlp


def save_sublayer_checkpoint(model, tokenizer, plan: PruningPlan, folder: Path) -> Path:
    """An HF folder that vanilla transformers loads with ``trust_remote_code=True``."""
    base = type(model)
    source = Path(skip.__file__).read_text()
    source += _SUBCLASS.format(module=base.__module__, base=base.__name__, name=CLASS_NAME)
    model.config.auto_map = {"AutoModelForCausalLM": f"modeling_layerprune.{CLASS_NAME}"}
    with atomic.directory(Path(folder)) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic.write_text(tmp / MODELING_FILE, source)
        atomic.write_json(tmp / PLAN_FILE, plan.to_dict())
    return Path(folder)
