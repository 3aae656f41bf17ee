"""A healer defined outside ``src/``: the plug-in test's toy. It needs no healing text and
trains nothing: it scales the LM head by ``factor`` (so its effect is visible in the logits)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from layerprune.heal.base import Healer, HealResult


@dataclass
class ScaleHead(Healer):
    name: str = "scale_head"
    factor: float = 2.0
    needs_text = False

    def heal(self, job, data) -> tuple[torch.nn.Module, HealResult]:
        model = job.lm.model
        with torch.no_grad():
            model.get_output_embeddings().weight.mul_(self.factor)
        return model, HealResult(self.name, 0, 0, 0.0, 0.0, 0.0, 0)
