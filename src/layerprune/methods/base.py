"""Pruning methods as plug-ins: one module + one YAML in ``conf/pruning_method/`` each.

A method is a dataclass subclass of ``PruningMethod``: its fields are its config keys, its
class attributes say what it needs before choosing (``"scan"``: the cached block scan, which
the select stage runs; ``"search"``: its own search, run inside ``plan``; ``"nothing"``), its
``family`` (``"block"`` or ``"sublayer"``: what reports group it with), its default metric and
the metrics it accepts; ``count`` says how many candidates a fraction removes (checked before
any model loads, then computed once by the select stage: ``ctx.count``) and ``plan`` returns
the ``PruningPlan``. The YAML names the class with Hydra's ``_target_``, so a method defined
outside ``src/`` needs no edit here or in the pipeline. Surgery and the checkpoint kind follow
from the plan alone.
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
    from layerprune.config import CalibrationConfig, MetricConfig
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
    """What a method may use to choose: the job's values, and the scan if it asked."""

    lm: LoadedModel
    fraction: float
    count: int  # candidates to remove: round(fraction x candidates), computed once
    num_blocks: int
    metric: MetricConfig  # name + token reduction (``metric=default`` already resolved)
    calibration: CalibrationConfig
    out_dir: Path  # figures go here
    title: str = ""  # the model's name, for figure titles
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
    family: ClassVar[str] = "block"  # "block" | "sublayer": what the method removes
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

    def search_evaluator(self, model, adapter, batches: list, metric: str):
        """The evaluator this method's search scores candidates with (``needs = "search"``),
        over ``batches`` of calibration tokens; also what the memory model runs."""
        raise LayerpruneError(f"pruning_method={self.name} does not search")

    def make_plan(self, ctx: MethodContext, **chosen: Any) -> PruningPlan:
        """A plan of this method at ``ctx.fraction`` (``chosen``: ``removed_*``, ``scores``,
        ``metric``, ``num_candidates``, ``note``); n = 0 says it is the unpruned model."""
        chosen.setdefault("num_candidates", ctx.num_blocks)
        if ctx.count == 0:
            chosen.setdefault("note", "n = 0: the unpruned model")
        return PruningPlan(self.name, fraction=ctx.fraction, family=self.family, **chosen)


@dataclass
class NoPruning(PruningMethod):
    """The model as loaded: the fraction-0 point of every curve."""

    name: str = "none"

    def count(self, fraction: float, num_blocks: int) -> int:
        return 0

    def plan(self, ctx: MethodContext) -> PruningPlan:
        return self.make_plan(ctx, note="pruning_method=none: the unpruned model")
