"""``PruningPlan``: what a method decided to remove, in original 0-based indices, and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class PruningPlan:
    method: str
    metric: str | None = None
    fraction: float = 0.0
    num_candidates: int = 0  # L blocks, or 2L sublayers for FinerCut
    removed_blocks: list[int] = field(default_factory=list)
    removed_attention: list[int] = field(default_factory=list)
    removed_mlp: list[int] = field(default_factory=list)
    scores: dict[str, Any] = field(default_factory=dict)  # what chose the removal
    note: str = ""
    family: str = "block"  # what the method removes: "block" | "sublayer" (for reports)

    @property
    def is_empty(self) -> bool:
        return not (self.removed_blocks or self.removed_attention or self.removed_mlp)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
