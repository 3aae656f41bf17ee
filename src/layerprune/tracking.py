"""wandb tracking: one run per job (config, metrics, plan, figures), grouped by sweep.

Offline by default (files under ``outputs/wandb``; ``wandb sync`` uploads them later), online
when ``tracking.mode=online``. The context manager always finishes the wandb run, also when the
job fails, so one failed job never leaves a sweep with a dangling run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class NoTracker:
    def log_results(self, results: dict[str, Any], out_dir: Path) -> None:
        pass


class WandbTracker:
    def __init__(self, run):
        self.run = run

    def log_results(self, results: dict[str, Any], out_dir: Path) -> None:
        """Metrics and timings as summary values, the plan as a table, PNGs as images."""
        import wandb

        flat = {f"metrics/{k}": v for k, v in results["metrics"].items()}
        flat |= {f"timings/{k}": v for k, v in results["timings"].items()}
        flat |= {"params/after": results["params"]["after"], "fraction": results["fraction"]}
        if results.get("healing"):
            flat |= {
                f"healing/{k}": v
                for k, v in results["healing"].items()
                if isinstance(v, int | float)
            }
        self.run.log(flat)
        self.run.summary.update(flat)
        plan = results["plan"]
        self.run.summary["plan"] = {
            k: plan[k]
            for k in ("method", "metric", "removed_blocks", "removed_attention", "removed_mlp")
        }
        for png in sorted(Path(out_dir).glob("*.png")):
            self.run.log({f"figures/{png.stem}": wandb.Image(str(png))})


@contextlib.contextmanager
def tracker(
    name: str,
    project: str,
    mode: str,
    group: str | None,
    job_name: str,
    config: dict,
    directory: Path,
) -> Iterator[NoTracker | WandbTracker]:
    """``name="none"``: a no-op; ``"wandb"``: an initialised run, finished on exit."""
    if name == "none":
        yield NoTracker()
        return
    import wandb

    directory.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(
        project=project,
        mode=mode,
        group=group,
        name=job_name,
        config=config,
        dir=str(directory),
        reinit="finish_previous",
    )
    try:
        yield WandbTracker(run)
        run.finish(exit_code=0)
    except BaseException:
        run.finish(exit_code=1)
        raise
