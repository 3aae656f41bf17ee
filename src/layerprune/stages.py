"""The stages of one job, in order: load, select, prune, heal, evaluate (and speed).

Each stage is a small object built from plain values and plug-ins (never the whole config);
``run(job)`` reads what earlier stages left in the ``JobState`` and adds its part. The
pipeline runs them in a list and times each as ``<name>_s``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from layerprune.config import (
        BenchmarkConfig,
        CalibrationConfig,
        MetricConfig,
        SpeedConfig,
    )
    from layerprune.data.text import Text
    from layerprune.evaluate.scorers import Scorer
    from layerprune.heal.base import Healer
    from layerprune.job import JobState
    from layerprune.methods.base import PruningMethod

log = logging.getLogger(__name__)


class Stage(Protocol):
    name: str

    def run(self, job: JobState) -> None: ...


@dataclass
class Load:
    """The model, tokenizer and family adapter (``job.loader``), and what it holds."""

    name: ClassVar[str] = "load"

    def run(self, job: JobState) -> None:
        from layerprune.models.load import count_parameters

        job.lm = job.loader()
        job.model = job.lm.model
        job.num_blocks = len(job.lm.adapter.blocks(job.lm.model))
        job.params_before = count_parameters(job.lm.model)
        log.info("loaded %s (%d blocks) on %s", job.lm.identity, job.num_blocks, job.lm.device)


@dataclass
class Select:
    """The method's plan: how many candidates the fraction removes (computed here, once), the
    block scan first if the method needs it (cached by content), then ``method.plan``."""

    method: PruningMethod
    metric: MetricConfig
    calibration: CalibrationConfig
    title: str  # the model's name, for figure titles
    name: ClassVar[str] = "select"

    def run(self, job: JobState) -> None:
        from layerprune.methods.base import MethodContext

        count = self.method.count(job.fraction, job.num_blocks)
        ctx = MethodContext(
            job.lm,
            job.fraction,
            count,
            job.num_blocks,
            self.metric,
            self.calibration,
            job.out_dir,
            self.title,
            job.timings,
        )
        if self.method.needs == "scan" and count > 0:
            from layerprune.scan.run import calibrated_scan

            with job.timed("scan"):
                ctx.scan, hit = calibrated_scan(job.lm, self.calibration)
            ctx.cache = "hit" if hit else "miss"
            log.info("scan cache %s (%d sequences)", ctx.cache, ctx.scan.num_sequences)
        job.plan = self.method.plan(ctx)
        job.caches["scan"] = ctx.cache
        p = job.plan
        log.info(
            "plan: blocks %s, attention %s, MLP %s %s",
            p.removed_blocks,
            p.removed_attention,
            p.removed_mlp,
            p.note,
        )


@dataclass
class Prune:
    """Real removal, as the plan says: whole blocks are deleted (a plain HF checkpoint); any
    sublayer makes stand-ins and a checkpoint with its own modeling file. ``save``: write the
    checkpoint (asked for, or needed by the healer)."""

    save: bool
    name: ClassVar[str] = "prune"

    def run(self, job: JobState) -> None:
        from layerprune.models.load import count_parameters
        from layerprune.surgery.apply import apply_plan
        from layerprune.surgery.blocks import save_checkpoint
        from layerprune.surgery.sublayers import save_sublayer_checkpoint

        lm, plan = job.lm, job.plan
        sublayers = apply_plan(lm.model, lm.adapter, plan)
        job.params_after = count_parameters(lm.model)  # before any LoRA adapter
        job.model = lm.model
        if self.save:
            with job.timed("save"):
                save = save_sublayer_checkpoint if sublayers else save_checkpoint
                job.checkpoint = save(lm.model, lm.tokenizer, plan, job.out_dir / "checkpoint")


@dataclass
class Heal:
    """The healer on the ``healing`` split of ``text`` (disjoint from every evaluated text)."""

    healer: Healer
    text: Text  # the calibration's source (offline or Hub): its healing documents
    name: ClassVar[str] = "heal"

    def run(self, job: JobState) -> None:
        if not self.healer.active:
            return
        from layerprune.data.packing import pack
        from layerprune.heal.base import HealingText

        name, text = self.text.name("healing"), None
        if self.healer.needs_text:
            docs = self.text.documents("healing")
            text = HealingText(pack(job.lm.tokenizer, docs, self.healer.seq_len, job.seed), name)
        job.model, result = self.healer.heal(job, text)
        job.healing = result.to_dict()
        job.healing_identity = {**self.healer.identity(), "text": name, "seed": job.seed}
        log.info(
            "healed: loss %.4f -> %.4f in %d steps (%d tokens, %.0f tokens/s), evaluated %s",
            result.first_loss,
            result.last_loss,
            result.steps,
            result.tokens,
            result.tokens_per_s,
            result.evaluated,
        )


@dataclass
class Evaluate:
    """lm-eval tasks through the scorer (and its request cache), and held-out losses."""

    benchmark: BenchmarkConfig
    scorer: Scorer
    name: ClassVar[str] = "eval"

    def run(self, job: JobState) -> None:
        from layerprune.evaluate.suite import evaluate_suite

        identity = job.identity() if self.scorer.request_cache else None
        suite = evaluate_suite(job.model, job.lm.tokenizer, self.benchmark, self.scorer, identity)
        job.metrics.update(suite.metrics)
        job.items.update(suite.items)
        job.eval_cache = suite.eval_cache
        job.timings.update(suite.timings)


@dataclass
class Speed:
    """The pruned model against the unpruned one (loaded again, placed as the job's model:
    one device or a ``device_map`` split), in this process (``speed.py``: each model's memory
    measured alone, per device); nothing to compare when nothing was removed. The unpruned
    copy is freed afterwards (its GPU memory returned to the device)."""

    settings: SpeedConfig
    name: ClassVar[str] = "speed"

    def run(self, job: JobState) -> None:
        if not self.settings.enabled or job.plan.is_empty:
            return
        from layerprune.models.load import free_memory
        from layerprune.speed import speed_report

        unpruned = job.loader()
        pruned = job.model.eval()
        adapters = (job.lm.adapter, unpruned.adapter)
        job.speed = speed_report(pruned, unpruned.model, self.settings, adapters)
        if job.checkpoint:
            files = [f for f in job.checkpoint.rglob("*") if f.is_file()]
            job.speed["pruned"]["checkpoint_bytes"] = sum(f.stat().st_size for f in files)
        del unpruned
        free_memory()
