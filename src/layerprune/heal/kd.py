"""Healing by distillation from the unpruned model (``healing=kd``).

The teacher is free: it is the model the job loaded, before pruning (loaded again, frozen, in
the same dtype, run under ``no_grad``); ``teacher_4bit=true`` loads it as bitsandbytes nf4
instead (a quarter of bf16's weight memory; its logits are the nf4 model's, so the setting is
part of every key), which needs a checkpoint to quantise (not ``model.source=random``). The
student is the pruned model with LoRA adapters (``trainable=lora``, the MLP projections by
default, as Gromov et al.) or its last blocks and head (``trainable=partial``). Loss, per token
position p (all positions of the packed text):

    kd     = T^2 * KL(softmax(t_p / T) || softmax(s_p / T))      forward KL (Minitron), T = 1
    ce     = the language-modelling loss                          weight ``ce_weight`` (0)
    hidden = mean over kept-block inputs of |h_s - h_t|^2 / |h_t|^2   weight ``hidden_weight`` (0)
    loss   = kd + ce_weight * ce + hidden_weight * hidden

(mean over positions; the T^2 factor keeps gradient sizes comparable across temperatures,
Hinton et al. 2015). ``hidden`` compares the residual stream entering each kept block j >= 1
of the student with the teacher's entering the same original block: the state that block was
trained to read.

``teacher_topk=k`` replaces the teacher forward by a file of its k most likely tokens' log-
probabilities at T for every position of the healing text, computed once per base model,
dtype, text and T (``$LAYERPRUNE_HOME/teacher/``) and read by every job of a sweep; the loss
then sums the KL's terms over those k tokens only (the tail's terms are dropped: their share
of the teacher's mass is logged as ``topk_mass``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from layerprune import atomic, paths
from layerprune.errors import LayerpruneError
from layerprune.heal.base import HealingText
from layerprune.heal.lora import LoRA, attach_partial, save_merged
from layerprune.integrity import read_or_quarantine
from layerprune.models.adapter import input_device

if TYPE_CHECKING:
    from layerprune.job import JobState

log = logging.getLogger(__name__)
TRAINABLE = ("lora", "partial")
TOPK_VERSION = 1  # bump when the cached values' arithmetic changes


def kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), mean over the positions where
    ``mask`` is true (all when None). Logits ``[..., vocabulary]``; computed in float32."""
    t = F.log_softmax(teacher.to(student.device).float() / temperature, dim=-1)
    s = F.log_softmax(student.float() / temperature, dim=-1)
    per_position = (t.exp() * (t - s)).sum(-1)
    return temperature**2 * _mean(per_position, mask)


def topk_kd_loss(
    student: torch.Tensor,
    teacher_logp: torch.Tensor,
    teacher_ids: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The KL's terms over the teacher's top-k tokens only: T^2 * sum_k p_k (log p_k - log q_k),
    with p the teacher's log-probabilities at T (``[..., k]``, of the full softmax) and q the
    student's at ``teacher_ids``."""
    s = F.log_softmax(student.float() / temperature, dim=-1).gather(-1, teacher_ids.long())
    per_position = (teacher_logp.exp() * (teacher_logp - s)).sum(-1)
    return temperature**2 * _mean(per_position, mask)


def hidden_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Mean over pairs of |h_s - h_t|^2 / |h_t|^2 (scale-free across models and depths)."""
    terms = [
        (s.float() - t.to(s.device).float()).pow(2).mean()
        / t.to(s.device).float().pow(2).mean().clamp_min(1e-12)
        for s, t in zip(student, teacher, strict=True)
    ]
    return torch.stack(terms).mean()


def _mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean()
    mask = mask.to(values.device, values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1)


@dataclass
class KD(LoRA):
    """Distillation from the unpruned model (module doc)."""

    name: str = "kd"
    trainable: str = "lora"  # lora (adapters on lora_targets) | partial (last blocks + head)
    partial_blocks: int = 3
    temperature: float = 1.0
    ce_weight: float = 0.0
    hidden_weight: float = 0.0
    teacher_topk: int = 0  # 0: teacher logits on the fly; k: cached top-k log-probabilities
    teacher_4bit: bool = False  # load the teacher as nf4 (bitsandbytes)
    needs_teacher = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.trainable not in TRAINABLE:
            raise LayerpruneError(f"healing.trainable={self.trainable!r}: one of {TRAINABLE}")
        if not self.temperature > 0:
            raise LayerpruneError(f"healing.temperature must be > 0, got {self.temperature}")
        if self.ce_weight < 0 or self.hidden_weight < 0 or self.teacher_topk < 0:
            raise LayerpruneError("healing.ce_weight, hidden_weight, teacher_topk must be >= 0")
        if self.teacher_topk and self.hidden_weight:
            raise LayerpruneError(
                "healing.hidden_weight needs the teacher's hidden states on the fly: "
                "use teacher_topk=0 with it"
            )

    # -- the student --------------------------------------------------------------------

    def student(self, job: JobState) -> torch.nn.Module:
        if self.trainable == "partial":
            return attach_partial(job.lm.model, job.lm.adapter, self.partial_blocks)
        return super().student(job)

    def finish(self, model: torch.nn.Module, job: JobState) -> tuple[torch.nn.Module, dict]:
        self._teacher = None  # free it before evaluation
        if self.trainable == "lora":
            return super().finish(model, job)
        out = {"evaluated": "as trained"}
        if self.merge:
            out["merged"] = save_merged(model, job.lm.tokenizer, job.out_dir / "merged")
        return model, out

    # -- the teacher --------------------------------------------------------------------

    def prepare(self, job: JobState, text: HealingText) -> None:
        plan = job.plan
        gone = set(plan.removed_blocks)
        self._kept = [i for i in range(job.num_blocks) if i not in gone]
        self._teacher, self._topk = None, None
        if self.teacher_topk:
            self._topk = teacher_topk(
                job, text, self.temperature, self.teacher_topk, self.teacher_4bit
            )
        else:
            self._teacher = frozen_teacher(job, self.teacher_4bit)

    def loss(self, model: torch.nn.Module, batch: torch.Tensor, rows: torch.Tensor):
        hidden = self.hidden_weight > 0
        out = model(input_ids=batch, output_hidden_states=hidden)
        if self._topk is not None:
            logp, ids = (x[rows].to(out.logits.device) for x in self._topk)
            kd = topk_kd_loss(out.logits, logp, ids, self.temperature)
        else:
            with torch.no_grad():
                ids = batch.to(input_device(self._teacher))
                t_out = self._teacher(input_ids=ids, output_hidden_states=hidden)
            kd = kd_loss(out.logits, t_out.logits, self.temperature)
        loss, parts = kd, {"kd": kd.item()}
        if self.ce_weight:
            targets = batch[:, 1:].flatten().to(out.logits.device)
            ce = F.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(), targets)
            loss = loss + self.ce_weight * ce
            parts["ce"] = ce.item()
        if hidden:
            # student block j (j >= 1) reads hidden_states[j]; the teacher's block kept[j]
            # reads its hidden_states[kept[j]]
            pairs = range(1, len(self._kept))
            h = hidden_loss(
                [out.hidden_states[j] for j in pairs],
                [t_out.hidden_states[self._kept[j]] for j in pairs],
            )
            loss = loss + self.hidden_weight * h
            parts["hidden"] = h.item()
        return loss, parts


def frozen_teacher(job: JobState, four_bit: bool = False) -> torch.nn.Module:
    """The unpruned model, loaded again (as nf4 if ``four_bit``), in eval mode, with no
    parameter requiring grad."""
    if four_bit and job.lm.identity.startswith("random:"):
        raise LayerpruneError(
            "healing.teacher_4bit needs a checkpoint to quantise; model.source=random has "
            "none: save the model and load it with model.source=path, or teacher_4bit=false"
        )
    teacher = (job.loader(load_in_4bit=True) if four_bit else job.loader()).model.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def teacher_topk(
    job: JobState, text: HealingText, temperature: float, k: int, four_bit: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log-probabilities [N, S, k] float32, token ids [N, S, k] int32)`` of the teacher's k
    most likely tokens at every position of ``text`` (log-softmax at T over the whole
    vocabulary), from the cache or computed once and cached; ``four_bit``: of the nf4
    teacher."""
    tokens = text.tokens
    h = hashlib.sha256(tokens.numpy().tobytes())
    described = {
        "v": TOPK_VERSION,
        **job.lm.cache_key(),
        "shape": list(tokens.shape),
        "T": temperature,
        "k": k,
    }
    if four_bit or job.lm.load_in_4bit:  # an nf4 teacher (absent: the keys made before)
        described["load_in_4bit"] = True
    h.update(json.dumps(described, sort_keys=True).encode())
    path = paths.home() / "teacher" / f"topk-{h.hexdigest()[:24]}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.cache_lock(path):
        stored = read_or_quarantine(path, partial(_read_topk, shape=[*tokens.shape, k]))
        if stored is not None:
            log.info("teacher top-%d: from the cache (%s)", k, path)
            return stored["logp"], stored["ids"]
        teacher = frozen_teacher(job, four_bit)
        logp, ids, mass = _compute_topk(teacher, tokens, temperature, k)
        del teacher
        buf = io.BytesIO()
        torch.save({"logp": logp, "ids": ids, "mass": mass}, buf)
        atomic.write_bytes(path, buf.getvalue())
        log.info("teacher top-%d cached (%s); mean top-k mass %.4f", k, path, mass)
        return logp, ids


def _read_topk(path, shape: list[int]) -> dict:
    stored = torch.load(path, weights_only=True)
    if list(stored["ids"].shape) != shape or list(stored["logp"].shape) != shape:
        raise ValueError(f"shape {list(stored['ids'].shape)}, expected {shape}")
    return stored


@torch.no_grad()
def _compute_topk(teacher, tokens: torch.Tensor, temperature: float, k: int):
    """The teacher's top-k log-probabilities at T for every row of ``tokens`` (8 rows a call)."""
    device, batch = input_device(teacher), 8
    logps, idss, mass = [], [], 0.0
    for i in tqdm(range(0, len(tokens), batch), desc="teacher top-k", unit="batch"):
        logits = teacher(input_ids=tokens[i : i + batch].to(device)).logits.float()
        logp = F.log_softmax(logits / temperature, dim=-1)
        top, ids = logp.topk(k, dim=-1)
        logps.append(top.cpu())
        idss.append(ids.to(torch.int32).cpu())
        mass += float(top.exp().sum(-1).sum())
    return torch.cat(logps), torch.cat(idss), mass / tokens.numel()
