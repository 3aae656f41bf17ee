"""The training loop every fine-tuning healer shares (LoRA, QLoRA, partial, distillation).

AdamW, linear warm-up then cosine decay (``schedule=cosine``, the papers') or a constant rate
(``schedule=constant``), gradient accumulation, bf16 autocast on CUDA and fp32 on CPU, gradient
clipping, a loss CSV, and resumable snapshots of the trainable state.

Memory: ``gradient_checkpointing`` keeps only each block's input for backward and recomputes
the rest (non-reentrant ``torch.utils.checkpoint``: frozen inputs need no ``requires_grad``
hack, and the RNG is replayed, so dropout masks and the trained weights are the same).
Trainable weights stored in bf16 / fp16 (``partial``, KD ``trainable=partial``) are trained
as a float32 master copy and cast back when training ends: an AdamW update below half the
spacing of half-precision numbers would otherwise be rounded away (lr 1e-4 on a weight of
0.05 is 0.4 of bf16's spacing there); their frozen neighbours stay in half precision
(autocast).

Text: the steps must fit in ``max_epochs`` passes over the healing text (1 by default): asking
for more tokens than the text holds is an error naming both, not a silent repetition.

Snapshots (with the CPU and CUDA RNG states) live under ``$LAYERPRUNE_HOME/heal/<key>/``, the
key naming what is trained: the base weights, the removed blocks / sublayers, the healer's
training settings, the text and the seed.
``latest.pt`` (every ``checkpoint_every`` steps, atomic) lets a killed job resume where it
stopped. With ``schedule=constant`` the rate at step t does not depend on the total, and the
data order is a prefix of any longer run's, so ``steps`` is left out of the key and a finished
run keeps ``final-<steps>.pt``: a job asking for more steps continues from the longest run
that is not longer than it (a healing-budget sweep is one run, evaluated on the way) and ends
with the weights a single long run would have.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
import time
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from layerprune import atomic, paths
from layerprune.errors import LayerpruneError
from layerprune.heal.base import Healer, HealingText, HealResult, keyed
from layerprune.integrity import read_or_quarantine
from layerprune.models.adapter import input_device
from layerprune.plugins import settings

if TYPE_CHECKING:
    from layerprune.job import JobState

log = logging.getLogger(__name__)
SCHEDULES = ("cosine", "constant")
# settings that change what is saved or evaluated, not the training: not in the resume key
# (nor are ``heal.base.NOT_IN_KEY``'s: memory and the passes allowed)
NOT_TRAINING = ("merge", "eval_merged", "checkpoint_every")
HALF = (torch.bfloat16, torch.float16)


@dataclass
class FineTune(Healer):
    """A healer that trains part of the model (module doc); subclasses choose which part
    (``student``) and may change the objective (``loss``)."""

    steps: int = 40  # optimiser steps
    batch_size: int = 4  # sequences per micro-batch
    grad_accum: int = 1
    seq_len: int = 256
    lr: float = 3e-4
    warmup_steps: int = 4
    schedule: str = "cosine"  # cosine | constant (after warm-up; budget sweeps)
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    checkpoint_every: int = 10  # resumable snapshot every N steps (0 = never)
    gradient_checkpointing: bool = False  # keep block inputs only, recompute the rest
    max_epochs: float = 1.0  # passes over the healing text allowed (more tokens: an error)

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "grad_accum", "seq_len"):
            if getattr(self, key) < 1:
                raise LayerpruneError(f"healing.{key} must be >= 1, got {getattr(self, key)}")
        if not self.max_epochs > 0:
            raise LayerpruneError(f"healing.max_epochs must be > 0, got {self.max_epochs}")
        if not self.lr > 0:
            raise LayerpruneError(f"healing.lr must be > 0, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise LayerpruneError(f"healing.schedule={self.schedule!r}: one of {SCHEDULES}")

    # -- what subclasses choose ------------------------------------------------------------

    @abstractmethod
    def student(self, job: JobState) -> torch.nn.Module:
        """The model to train, with only its trainable parameters requiring gradients."""

    def prepare(self, job: JobState, text: HealingText) -> None:  # noqa: B027
        """Anything needed before the first step (the teacher, for distillation)."""

    def loss(
        self, model: torch.nn.Module, batch: torch.Tensor, rows: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss of one micro-batch (``rows``: its indices in the healing text)
        and its parts for the log. Default: the language-modelling loss."""
        loss = model(input_ids=batch, labels=batch).loss
        return loss, {}

    def finish(self, model: torch.nn.Module, job: JobState) -> tuple[torch.nn.Module, dict]:
        """After training: save what the healer keeps; return the model to evaluate and
        ``{"evaluated": "as trained" | "merged", <what>: <folder saved>}``."""
        return model, {"evaluated": "as trained"}

    # -- the run ---------------------------------------------------------------------------

    def heal(self, job: JobState, data: torch.Tensor | HealingText):
        text = data if isinstance(data, HealingText) else HealingText(data, "tokens")
        self.check_text(text)  # before anything is loaded
        model = self.student(job)
        self.prepare(job, text)
        resume = resume_folder(self, job, text.name)
        result = self.train(model, text, job.out_dir / "healing_loss.csv", resume, job.seed)
        result.text = text.name
        model, saved = self.finish(model, job)
        result.evaluated = saved.pop("evaluated")
        result.saved = saved
        return model, result

    def check_text(self, text: HealingText) -> None:
        """The tokens asked for fit in ``max_epochs`` passes over ``text`` (module doc)."""
        rows, seq_len = text.tokens.shape
        per_step = self.batch_size * self.grad_accum
        held, needed = rows * seq_len, self.steps * per_step * seq_len
        if self.steps * per_step <= self.max_epochs * rows:
            return
        raise LayerpruneError(
            f"healing={self.name} needs {needed:,} tokens (steps x batch x accumulation x "
            f"seq_len); {text.name} holds {held:,} ({held / needed:.1%}): use a larger text "
            f"source or allow repeated passes with healing.max_epochs="
            f"{math.ceil(needed / held)}"
        )

    def train(
        self,
        model: torch.nn.Module,
        text: HealingText,
        loss_csv: Path,
        resume: Path | None = None,
        seed: int = 0,
    ) -> HealResult:
        """Train ``model``'s trainable parameters for ``steps`` optimiser steps on ``text``
        (cycled in seeded random order, a new order per pass)."""
        self.check_text(text)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise LayerpruneError("healing has no trainable parameters")
        half = float32_master(params)
        autocast = _autocast(input_device(model), half)
        data = text.tokens
        try:
            with checkpointing(model, self.gradient_checkpointing):
                run, start, seconds = self._loop(model, data, autocast, resume, seed)
            if resume:
                self._close(resume, run)  # the master copy, before it is cast back
        finally:
            for p, dtype in half.items():  # the master copy back to the model's dtype
                p.data, p.grad = p.data.to(dtype), None
        losses, per_step = run.losses, self.batch_size * self.grad_accum
        _write_losses(loss_csv, losses)
        own = (self.steps - start) * per_step * data.shape[1]
        return HealResult(
            method=self.name,
            steps=self.steps,
            tokens=self.steps * per_step * data.shape[1],
            first_loss=losses[0][1] if losses else float("nan"),
            last_loss=losses[-1][1] if losses else float("nan"),
            seconds=round(seconds, 3),
            trainable_params=sum(p.numel() for p in params),
            resumed_from=start,
            tokens_per_s=round(own / seconds, 2) if own and seconds > 0 else 0.0,
            epochs=round(self.steps * per_step / len(data), 3),
            last_parts={k: round(v, 6) for k, v in (losses[-1][3] if losses else {}).items()},
        )

    def _loop(
        self,
        model: torch.nn.Module,
        data: torch.Tensor,
        autocast,
        resume: Path | None,
        seed: int,
    ) -> tuple[_Run, int, float]:
        """The optimiser steps from where ``resume`` left off: ``(run, first step, seconds)``."""
        device = input_device(model)  # where the input ids go (the first of a split)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        run = _Run(model, opt, self._scheduler(opt), [])
        sched, losses = run.sched, run.losses
        start = _restore(resume, self.steps, run) if resume else 0
        per_step = self.batch_size * self.grad_accum
        gen = torch.Generator().manual_seed(seed)
        passes = math.ceil(self.steps * per_step / len(data))
        order = torch.cat([torch.randperm(len(data), generator=gen) for _ in range(passes)])
        model.train()
        begin = time.perf_counter()
        bar = tqdm(
            range(start, self.steps),
            desc=f"heal ({self.name})",
            unit="step",
            initial=start,
            total=self.steps,
        )
        for step in bar:
            opt.zero_grad(set_to_none=True)
            total, parts = 0.0, {}
            for micro in range(self.grad_accum):
                rows = order[step * per_step + micro * self.batch_size :][: self.batch_size]
                with autocast:
                    loss, part = self.loss(model, data[rows].to(device), rows)
                (loss / self.grad_accum).backward()
                total += loss.item() / self.grad_accum
                for k, v in part.items():
                    parts[k] = parts.get(k, 0.0) + v / self.grad_accum
            torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
            opt.step()
            sched.step()
            losses.append((step + 1, total, sched.get_last_lr()[0], parts))
            bar.set_postfix(loss=f"{total:.4f}")
            if resume and self.checkpoint_every and (step + 1) % self.checkpoint_every == 0:
                _snapshot(resume / "latest.pt", run, step + 1)
        seconds = time.perf_counter() - begin
        model.eval()
        return run, start, seconds

    def _scheduler(self, opt: torch.optim.Optimizer):
        from transformers import (
            get_constant_schedule_with_warmup,
            get_cosine_schedule_with_warmup,
        )

        if self.schedule == "constant":
            return get_constant_schedule_with_warmup(opt, self.warmup_steps)
        return get_cosine_schedule_with_warmup(opt, self.warmup_steps, self.steps)

    def _close(self, resume: Path, run: _Run) -> None:
        """A finished run: a constant-rate run keeps its end state for longer budgets; a
        cosine run's state serves nothing else and is removed."""
        if self.schedule == "constant":
            _snapshot(resume / f"final-{self.steps:07d}.pt", run, self.steps)
            (resume / "latest.pt").unlink(missing_ok=True)
        else:
            shutil.rmtree(resume, ignore_errors=True)

    def training_identity(self) -> dict:
        """The settings that decide the trained weights (the resume key's part)."""
        out = {k: v for k, v in keyed(settings(self)).items() if k not in NOT_TRAINING}
        if self.schedule == "constant":
            out.pop("steps")  # a longer run passes through every shorter one
        return {"class": f"{type(self).__module__}.{type(self).__name__}", **out}


def resume_folder(healer: FineTune, job: JobState, text: str) -> Path:
    """``$LAYERPRUNE_HOME/heal/<key>``: the key names what is trained (module doc)."""
    lm, plan = job.lm, job.plan
    described = {
        **lm.cache_key(),
        "load_in_4bit": lm.load_in_4bit,  # keyed here (False too) before cache_key existed
        "removed": [plan.removed_blocks, plan.removed_attention, plan.removed_mlp],
        "healer": healer.training_identity(),
        "text": text,
        "seed": job.seed,
    }
    text_key = json.dumps(described, sort_keys=True, default=str)
    return paths.home() / "heal" / hashlib.sha256(text_key.encode()).hexdigest()[:20]


def float32_master(params: list[torch.nn.Parameter]) -> dict[torch.nn.Parameter, torch.dtype]:
    """Cast the half-precision ones of ``params`` to float32 in place (the master copy they
    train as); return them with the dtype to cast back to."""
    half = {p: p.dtype for p in params if p.dtype in HALF}
    for p in half:
        p.data = p.data.float()
    return half


def _autocast(device: torch.device, half: dict[torch.nn.Parameter, torch.dtype]):
    """bf16 autocast on CUDA; on CPU, float32 unless a float32 master copy trains beside
    frozen half-precision weights (then their dtype, so that the two meet in matmuls)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if half:
        return torch.autocast("cpu", dtype=next(iter(half.values())))
    return torch.autocast("cpu", enabled=False)


@contextmanager
def checkpointing(model: torch.nn.Module, on: bool) -> Iterator[None]:
    """Gradient checkpointing of ``model``'s blocks (non-reentrant) while the block runs."""
    if not on:
        yield
        return
    hf = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    if not getattr(hf, "supports_gradient_checkpointing", False):
        raise LayerpruneError(
            f"{type(hf).__name__} does not support gradient checkpointing: "
            "set healing.gradient_checkpointing=false"
        )
    if hasattr(hf, "activation_checkpointing_enable"):  # transformers >= 5.x
        hf.activation_checkpointing_enable({"use_reentrant": False})
        off = hf.activation_checkpointing_disable
    else:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        off = hf.gradient_checkpointing_disable
    try:
        yield
    finally:
        off()


@dataclass
class _Run:
    """What a snapshot holds besides the step: the trained model, optimiser, schedule, losses."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    losses: list[tuple]


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _snapshot(path: Path, run: _Run, step: int) -> None:
    """The trainable weights, optimiser, schedule, losses and RNG at ``step``, atomically."""
    import io

    state = {
        "step": step,
        "trainable": _trainable_state(run.model),
        "optimizer": run.opt.state_dict(),
        "scheduler": run.sched.state_dict(),
        "losses": run.losses,
        "rng": torch.get_rng_state(),
    }
    if torch.cuda.is_available():  # dropout on CUDA draws from each device's generator
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic.write_bytes(path, buf.getvalue())  # a kill never leaves half a snapshot


def _usable(folder: Path, steps: int) -> list[tuple[int, Path]]:
    """Snapshots in ``folder`` at most ``steps`` steps in, longest first (``latest.pt``'s step
    is read when it is loaded)."""
    found = []
    for path in folder.glob("*.pt"):
        m = re.fullmatch(r"final-(\d+)\.pt", path.name)
        if m:
            found.append((int(m.group(1)), path))
        elif path.name == "latest.pt":
            found.append((steps, path))  # tried first; skipped if it is further on
    return sorted((s, p) for s, p in found if s <= steps)[::-1]


def _read_snapshot(path: Path) -> dict:
    state = torch.load(path, weights_only=False)
    missing = {"step", "trainable", "optimizer", "scheduler", "losses", "rng"} - set(state)
    if missing:
        raise ValueError(f"snapshot lacks {sorted(missing)}")
    return state


def _restore(folder: Path, steps: int, run: _Run) -> int:
    """Load the longest usable snapshot into ``run``; return its step (0 if none). A damaged
    snapshot is moved aside (``integrity.quarantine``) and the next one tried."""
    for _, path in _usable(folder, steps) if folder.exists() else []:
        state = read_or_quarantine(path, _read_snapshot)
        if state is None or state["step"] > steps:
            continue
        step = int(state["step"])
        named = dict(run.model.named_parameters())
        with torch.no_grad():
            for n, t in state["trainable"].items():
                named[n].copy_(t.to(named[n].device))
        run.opt.load_state_dict(state["optimizer"])
        run.sched.load_state_dict(state["scheduler"])
        run.losses[:] = [tuple(x) if len(x) == 4 else (*x, {}) for x in state["losses"]]
        torch.set_rng_state(state["rng"])
        _restore_cuda_rng(state.get("cuda_rng"))  # absent from older snapshots
        log.info("healing resumes at step %d of %d (%s)", step, steps, path)
        return step
    return 0


def _restore_cuda_rng(states: list[torch.Tensor] | None) -> None:
    """Each CUDA device's generator as snapshotted, when this machine has as many devices."""
    if states is None or not torch.cuda.is_available():
        return
    if len(states) != torch.cuda.device_count():
        log.warning(
            "the snapshot holds %d CUDA RNG states, this machine %d devices: CUDA RNG not restored",
            len(states),
            torch.cuda.device_count(),
        )
        return
    torch.cuda.set_rng_state_all(states)


def _write_losses(path: Path, losses: list[tuple]) -> None:
    """``step,loss,lr[,parts...]`` per optimiser step."""
    parts = sorted({k for *_, p in losses for k in p})
    head = ",".join(["step", "loss", "lr", *parts])
    rows = [
        ",".join(
            [str(s), f"{loss:.6f}", f"{lr:.3e}", *(f"{p.get(k, float('nan')):.6f}" for k in parts)]
        )
        for s, loss, lr, p in losses
    ]
    atomic.write_text(path, "\n".join([head, *rows]) + "\n")
