"""Hydra callback: when a multirun ends, build its report (and a wandb summary run)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class ReportCallback(Callback):
    """Writes ``<sweep dir>/report/``: table (CSV, parquet, Markdown) and figures."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from layerprune.report.cli import DEFAULT_METRICS, build_report

        sweep = Path(config.hydra.sweep.dir)
        if not any(sweep.rglob("results.json")):
            return
        try:
            table = build_report(
                [sweep],
                sweep / "report",
                DEFAULT_METRICS,
                title=str(config.get("experiment") or sweep.name),
            )
        except Exception as e:  # a report must never turn a finished sweep into a failure
            log.warning("report for %s failed: %s", sweep, e)
            return
        log.info("report: %s (%d jobs)", sweep / "report", len(table))
        tracking = config.get("tracking") or {}
        if tracking.get("name") == "wandb":
            self._wandb_summary(sweep, tracking)

    @staticmethod
    def _wandb_summary(sweep: Path, tracking: DictConfig) -> None:
        import pandas as pd
        import wandb

        run = wandb.init(
            project=tracking.project,
            mode=tracking.mode,
            group=tracking.group or sweep.name,
            name=f"{sweep.name}-summary",
            job_type="summary",
            dir=str(tracking.dir),
            reinit="finish_previous",
        )
        try:
            report = sweep / "report"
            figures = {  # curves (stderr bands), retention, ablation bars (stderr bars)
                png.stem: wandb.Image(str(png)) for png in sorted(report.glob("*.png"))
            }
            run.log(
                {"results": wandb.Table(dataframe=pd.read_csv(report / "table.csv")), **figures}
            )
        finally:
            run.finish()
