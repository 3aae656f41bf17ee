"""Trackers as plug-ins (``conf/tracking/``): where a job's results go besides results.json.

- ``none`` (default): nowhere else;
- ``wandb``: one run per job (config, metrics, plan, figures), grouped by sweep. Offline by
  default (files under ``<dir>/wandb/``; ``wandb sync`` uploads them later), online with
  ``tracking.mode=online``. The run is always finished, also when the job fails, so one failed
  job never leaves a sweep with a dangling run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from layerprune.errors import LayerpruneError

if TYPE_CHECKING:
    from layerprune.results import Results

Log = Callable[["Results", Path], None]  # log one finished job's results (and its folder)


@dataclass
class Tracker:
    """The tracker that tracks nothing; the base of the others."""

    name: str = "none"
    group: str | None = None  # default: the sweep folder's name

    @contextlib.contextmanager
    def run(self, job_name: str, group: str | None, config: dict) -> Iterator[Log]:
        """A tracked run around one job; yields the function that logs its results."""
        yield lambda results, out_dir: None


@dataclass
class WandbTracker(Tracker):
    """One wandb run per job (module doc)."""

    name: str = "wandb"
    project: str = "layerprune"
    mode: str = "offline"  # offline | online | disabled
    dir: str = "outputs/wandb"  # wandb writes its files under <dir>/wandb/

    def __post_init__(self) -> None:
        if self.mode not in ("offline", "online", "disabled"):
            raise LayerpruneError(f"tracking.mode={self.mode!r}: offline, online or disabled")

    @contextlib.contextmanager
    def run(self, job_name: str, group: str | None, config: dict) -> Iterator[Log]:
        import wandb

        Path(self.dir).mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        run = wandb.init(
            project=self.project,
            mode=self.mode,
            group=self.group or group,
            name=job_name,
            config=config,
            dir=self.dir,
            reinit="finish_previous",
        )
        try:
            yield lambda results, out_dir: _log(run, results, out_dir)
            run.finish(exit_code=0)
        except BaseException:
            run.finish(exit_code=1)
            raise


def _log(run, results: Results, out_dir: Path) -> None:
    """Metrics, timings, speed ratios as summary values, the plan, PNGs as images."""
    import wandb

    flat = {f"metrics/{k}": v for k, v in results.metrics.items()}
    flat |= {f"timings/{k}": v for k, v in results.timings.items()}
    flat |= {"params/after": results.params["after"], "fraction": results.fraction}
    if results.healing:
        numbers = {k: v for k, v in results.healing.items() if isinstance(v, int | float)}
        flat |= {f"healing/{k}": v for k, v in numbers.items()}
    if results.speed:
        flat |= {f"speed/{k}": v for k, v in results.speed.get("ratios", {}).items()}
    run.log(flat)
    run.summary.update(flat)
    run.summary["model"] = results.model
    plan = results.plan
    run.summary["plan"] = {
        k: plan[k]
        for k in ("method", "metric", "removed_blocks", "removed_attention", "removed_mlp")
    }
    for png in sorted(Path(out_dir).glob("*.png")):
        run.log({f"figures/{png.stem}": wandb.Image(str(png))})
