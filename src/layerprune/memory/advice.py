"""Whether each stage fits a device, and for one that does not, a setting that makes it fit.

A fix is a change of the config (shown as the override that makes it); each is tried on a
copy of the config and kept only if the memory model says the stage then fits. Streaming the
scan (blocks loaded one at a time) is not built: it is named as not yet available.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from layerprune.config import Config
from layerprune.memory.devices import Device
from layerprune.memory.predict import Predictor, StagePeak, Target


@dataclass
class Verdict:
    peak: StagePeak
    fits: bool
    fix: str = ""  # an override that fits, or what else to do


def target_of(cfg: Config, device: Device) -> Target:
    """The target the job runs on: all ``device.count`` GPUs when the model is split."""
    gpus = device.count if cfg.model.device_map else 1
    return Target(device.kind, gpus)


def fits(peak: StagePeak, device: Device, slack: float = 1.0) -> bool:
    """The stage's fullest device holds its peak (times ``slack``: > 1 tolerates more)."""
    return peak.per_device <= device.usable * slack


Fix = tuple[str, Callable[[Config], None]]


def _set(path: str, value) -> Callable[[Config], None]:
    def apply(cfg: Config) -> None:
        *parents, leaf = path.split(".")
        node = cfg
        for p in parents:
            node = getattr(node, p)
        setattr(node, leaf, value)

    return apply


def _fixes(cfg: Config, stage: str, device: Device) -> list[Fix]:
    """Candidate fixes for ``stage``, least disruptive first."""
    healer, out = cfg.healing, []
    if stage == "heal":
        if hasattr(healer, "gradient_checkpointing") and not healer.gradient_checkpointing:
            out.append(
                (
                    "healing.gradient_checkpointing=true",
                    _set("healing.gradient_checkpointing", True),
                )
            )
        b, a = getattr(healer, "batch_size", 1), getattr(healer, "grad_accum", 1)
        while b > 1:
            b, a = b // 2, a * 2

            def smaller(c: Config, b=b, a=a) -> None:
                c.healing.batch_size, c.healing.grad_accum = b, a

            out.append((f"healing.batch_size={b} healing.grad_accum={a}", smaller))
        if getattr(healer, "needs_teacher", False):
            if hasattr(healer, "teacher_4bit") and not healer.teacher_4bit:
                out.append(("healing.teacher_4bit=true", _set("healing.teacher_4bit", True)))
            out.append(("healing.teacher_topk=64", _set("healing.teacher_topk", 64)))
    if stage in ("scan", "search"):
        c = cfg.calibration
        for b in (4, 2, 1):
            if b < c.batch_size:
                out.append((f"calibration.batch_size={b}", _set("calibration.batch_size", b)))
    if stage == "evaluate":
        for p in cfg.benchmark.perplexity:
            if p.batch_size > 1:

                def one(c: Config) -> None:
                    for q in c.benchmark.perplexity:
                        q.batch_size = 1

                out.append(("benchmark.perplexity[*].batch_size=1", one))
                break
        out.append(("scorer.batch_tokens=2048", _set("scorer.batch_tokens", 2048)))
    if stage == "speed":
        out.append(("speed=structure", _speed_structure))
    if device.kind == "cuda" and not cfg.model.load_in_4bit:
        out.append(("model.load_in_4bit=true (nf4)", _set("model.load_in_4bit", True)))
    return out


def _speed_structure(cfg: Config) -> None:
    cfg.speed.prefill_batches, cfg.speed.decode_batches = [], []


def advise(cfg: Config, device: Device, slack: float = 1.0) -> Iterator[Verdict]:
    """Each stage's peak on ``device`` in order, whether it fits and, if not, a fix (module
    doc); predicted one stage at a time, so a caller may stop at the first that does not fit."""
    for p in Predictor(cfg, target_of(cfg, device)).stages():
        ok = fits(p, device, slack)
        yield Verdict(p, ok, "" if ok else find_fix(cfg, p.stage, device))


def _stage(cfg: Config, stage: str, device: Device) -> StagePeak | None:
    return Predictor(cfg, target_of(cfg, device)).stage(stage)


def find_fix(cfg: Config, stage: str, device: Device) -> str:
    """The first setting under which ``stage`` fits ``device`` (module doc)."""
    for text, apply in _fixes(cfg, stage, device):
        trial = copy.deepcopy(cfg)
        apply(trial)
        peak = _stage(trial, stage, device)
        if peak is None or fits(peak, device):
            return text
    if device.kind == "cuda":
        now = device.count if cfg.model.device_map else 1
        for n in (2, 4, 8):
            if n <= now:
                continue
            trial = copy.deepcopy(cfg)
            trial.model.device_map = "auto"
            more = Device(device.name, "cuda", device.total, n)
            peak = _stage(trial, stage, more)
            if peak is None or fits(peak, more):
                return f"model.device_map=auto over {n} GPUs (gpus={n})"
    if stage == "scan":
        return "a streaming scan (one block in memory at a time): not yet available"
    return "no setting found, use a device with more memory"
