"""The state of one job: what each stage reads and what it adds.

``pipeline.run`` makes one ``JobState`` and passes it through its stages in order (load,
select, prune, heal, evaluate, speed); each stage reads what the earlier ones left and adds its
part. ``results.Results`` is written from the finished state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerprune.timing import timed

if TYPE_CHECKING:
    import torch

    from layerprune.models.load import LoadedModel
    from layerprune.plan import PruningPlan


@dataclass
class JobState:
    """One job as it runs (module doc). Fields after ``loader`` start empty."""

    out_dir: Path
    seed: int
    fraction: float
    loader: Callable[..., LoadedModel]  # the model as configured, unpruned (again: teacher;
    # keyword overrides of its config, e.g. load_in_4bit=True)
    lm: LoadedModel | None = None  # load: the model, pruned in place (model None after QLoRA)
    num_blocks: int = 0  # load: L
    plan: PruningPlan | None = None  # select
    params_before: int = 0  # load
    params_after: int = 0  # prune (before any adapter)
    checkpoint: Path | None = None  # prune: the saved pruned model, when saved
    model: torch.nn.Module | None = None  # the model evaluated: pruned, healed if healing ran
    healing: dict[str, Any] | None = None  # heal: what healing did (HealResult + paths)
    healing_identity: dict[str, Any] | None = None  # heal: what makes the healed model
    caches: dict[str, str | None] = field(default_factory=lambda: {"scan": None})
    metrics: dict[str, float] = field(default_factory=dict)  # evaluate: "<task>/<metric>"
    items: dict[str, list] = field(default_factory=dict)  # evaluate: per-item results by task
    eval_cache: dict[str, int] = field(default_factory=lambda: {"hits": 0, "misses": 0})
    speed: dict[str, Any] | None = None  # speed: pruned vs unpruned measurements
    timings: dict[str, float] = field(default_factory=dict)  # "<stage>_s"

    def timed(self, stage: str) -> Iterator[None]:
        """Time a stage (or a step of one) as ``timings["<stage>_s"]``."""
        return timed(self.timings, stage)

    def identity(self) -> dict[str, Any]:
        """What the evaluated model *is*, for its request cache: the same base weights with
        the same blocks / sublayers removed (and the same healing) score every request the
        same."""
        lm, plan = self.lm, self.plan
        return {
            **lm.numbers(),  # base weights, dtype, quantisation, device kind
            "removed_blocks": sorted(plan.removed_blocks),
            "removed_attention": sorted(plan.removed_attention),
            "removed_mlp": sorted(plan.removed_mlp),
            "healing": self.healing_identity,
        }
