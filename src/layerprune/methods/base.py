"""Pruning methods as plug-ins: one module + one YAML in ``conf/pruning_method/`` each.

A method is a dataclass subclass of ``PruningMethod``: its fields are its config keys, its
class attributes say what it needs before choosing (``"scan"``: the cached block scan, which
the pipeline runs; ``"search"``: its own search, run inside ``plan``; ``"nothing"``), its
default metric and the metrics it accepts; ``count`` says how many candidates a fraction
removes (checked before any model loads) and ``plan`` returns the ``PruningPlan``. The YAML
names the class with Hydra's ``_target_``, so a method defined outside ``src/`` needs no edit
here or in the pipeline. Surgery and the checkpoint kind follow from the plan alone.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from layerprune.errors import LayerpruneError
from layerprune.plan import PruningPlan
from layerprune.timing import timed

if TYPE_CHECKING:
    from layerprune.config import CalibrationConfig
    from layerprune.models.load import LoadedModel
    from layerprune.scan.residual import Scan


def count_to_remove(fraction: float, candidates: int) -> int:
    """round(fraction * candidates), halves rounded up (Python's round() would round 2.5 to 2)."""
    n = math.floor(fraction * candidates + 0.5)
    if n >= candidates:
        raise LayerpruneError(
            f"fraction={fraction} removes {n} of {candidates}: at least one must remain"
        )
    return n


@dataclass
class MethodContext:
    """What a method may use to choose: plain values of the job, and the scan if it asked."""

    lm: LoadedModel
    model_name: str
    fraction: float
    num_blocks: int
    metric: str
    reduction: str  # "last" | "mean" (token reduction of scan metrics)
    calibration: CalibrationConfig
    out_dir: Path  # figures go here
    timings: dict[str, float] = field(default_factory=dict)
    scan: Scan | None = None  # set when the method needs "scan" and removes anything
    cache: str | None = None  # "hit" / "miss" of the scan or the method's search cache

    def timed(self, stage: str):
        """Time a step of the method as ``<stage>_s`` in results.json."""
        return timed(self.timings, stage)


@dataclass
class PruningMethod(ABC):
    """Base of every pruning method (module doc)."""

    name: str = ""
    # methods with a search (needs="search") search this far once, so that every smaller
    # fraction of a sweep reuses it; the others ignore it (so one sweep can span methods)
    search_fraction: float = 0.5
    needs: ClassVar[str] = "nothing"  # "nothing" | "scan" | "search"
    default_metric: ClassVar[tuple[str, str] | None] = None  # (metric, reduction): metric=default
    metrics: ClassVar[tuple[str, ...]] = ()  # accepted metric names; () = the metric is unused

    def __post_init__(self) -> None:
        if not 0.0 <= self.search_fraction < 1.0:
            raise LayerpruneError("pruning_method.search_fraction must be in [0, 1)")

    def count(self, fraction: float, num_blocks: int) -> int:
        """Candidates removed at ``fraction`` (raises if nothing would remain)."""
        return count_to_remove(fraction, num_blocks)

    def check_metric(self, metric: str) -> None:
        if self.metrics and metric not in self.metrics:
            raise LayerpruneError(
                f"pruning_method={self.name} takes metric {' / '.join(self.metrics)}, not {metric}"
            )

    @abstractmethod
    def plan(self, ctx: MethodContext) -> PruningPlan:
        """What to remove at ``ctx.fraction`` (original 0-based indices) and why."""

    def empty_plan(self, ctx: MethodContext, num_candidates: int | None = None) -> PruningPlan:
        """The plan that removes nothing (n = 0)."""
        return PruningPlan(
            self.name,
            None,
            ctx.fraction,
            num_candidates or ctx.num_blocks,
            note="n = 0: the unpruned model",
        )


@dataclass
class NoPruning(PruningMethod):
    """The model as loaded: the fraction-0 point of every curve."""

    name: str = "none"

    def count(self, fraction: float, num_blocks: int) -> int:
        return 0

    def plan(self, ctx: MethodContext) -> PruningPlan:
        note = "pruning_method=none: the unpruned model"
        return PruningPlan("none", None, ctx.fraction, ctx.num_blocks, note=note)


def build_method(node: dict[str, Any] | PruningMethod) -> PruningMethod:
    """The method object of a ``pruning_method`` config node (its ``_target_`` class)."""
    if isinstance(node, PruningMethod):
        return node
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    node = dict(node)
    target = node.get("_target_")
    if not target:
        raise LayerpruneError(
            "pruning_method has no _target_: each conf/pruning_method/*.yaml names its method "
            "class (e.g. _target_: layerprune.methods.blocks.DeeperLayers)"
        )
    try:
        method = instantiate(node, _convert_="all")
    except InstantiationException as e:
        cause = e.__cause__ or e
        raise LayerpruneError(f"pruning_method ({target}): {str(cause).splitlines()[0]}") from e
    if not isinstance(method, PruningMethod):
        raise LayerpruneError(f"pruning_method: {target} is not a PruningMethod subclass")
    return method
