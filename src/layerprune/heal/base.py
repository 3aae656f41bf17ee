"""Healers as plug-ins: one dataclass + one YAML in ``conf/healing/`` each.

A healer's fields are its config keys; its YAML names the class with ``_target_`` (so a healer
defined outside ``src/`` needs no edit in the library). It declares what it needs from the job
(``needs_text``: the healing split, packed into ``seq_len`` tokens; ``needs_checkpoint``: the
pruned model saved to disk, for QLoRA's fresh 4-bit reload; ``needs_teacher``: the unpruned
model, for distillation, which ``job.loader()`` loads again) and ``heal`` turns the job's
pruned model into the model to evaluate. The pipeline names no healer.

Keys (run store, request cache, resume snapshots) name a healer by its settings, except the
ones in ``NOT_IN_KEY`` (they never change the healed model: how much memory training takes,
how many passes over the text are allowed) and the ones in ``KEYED_WHEN_SET`` at their default
(settings added after keys were in use: at that value a healer computes what it did before
they existed, so the keys made before still name the same models). ``keyed`` applies both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from layerprune.plugins import settings

if TYPE_CHECKING:
    import torch

    from layerprune.job import JobState

NOT_IN_KEY = ("gradient_checkpointing", "max_epochs")
KEYED_WHEN_SET: dict[str, Any] = {"teacher_4bit": False}


def keyed(values: dict[str, Any]) -> dict[str, Any]:
    """A healer's settings as its keys see them (module doc)."""
    unset = object()
    return {
        k: v for k, v in values.items() if k not in NOT_IN_KEY and KEYED_WHEN_SET.get(k, unset) != v
    }


@dataclass
class HealingText:
    """Packed healing tokens and where they came from."""

    tokens: torch.Tensor  # [N, seq_len]
    name: str  # e.g. "c4/healing"


@dataclass
class HealResult:
    """What a healing run did; ``results.json``'s ``healing`` block."""

    method: str
    steps: int
    tokens: int  # tokens trained on (steps x batch x accumulation x sequence length)
    first_loss: float
    last_loss: float
    seconds: float  # this run's training time (a resumed run counts only its own steps)
    trainable_params: int
    resumed_from: int = 0  # the step this run started from (a checkpoint, or a shorter run)
    tokens_per_s: float = 0.0  # training throughput of this run's own steps
    epochs: float = 0.0  # passes over the healing text
    text: str = ""  # the text trained on, "<source>/healing"
    last_parts: dict[str, float] = field(default_factory=dict)  # e.g. kd / ce / hidden
    saved: dict[str, str] = field(default_factory=dict)  # adapter / merged checkpoint folders
    evaluated: str = "as trained"  # "merged" (LoRA merged into a copy) | "as trained"

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


@dataclass
class Healer(ABC):
    """Base of every healer (module doc)."""

    name: str = ""
    seq_len: int = 256  # the healing text is packed into sequences of this many tokens
    needs_text: ClassVar[bool] = True
    needs_checkpoint: ClassVar[bool] = False
    needs_teacher: ClassVar[bool] = False

    @property
    def active(self) -> bool:
        """False for the healer that does nothing: the job then skips the stage."""
        return True

    def wants_checkpoint(self) -> bool:
        """Whether the prune stage must save the pruned model for this healer."""
        return self.needs_checkpoint

    @abstractmethod
    def heal(self, job: JobState, data: HealingText | None) -> tuple[torch.nn.Module, HealResult]:
        """Heal ``job.lm.model`` (the pruned model) on ``data`` (the packed healing text, None
        unless ``needs_text``); return the model to evaluate and what was done."""

    def identity(self) -> dict[str, Any]:
        """What makes the healed model (request-cache key): every setting but the ones that
        cannot change it (``keyed``)."""
        return keyed(settings(self))


@dataclass
class NoHealing(Healer):
    """The pruned model as it is. Settings of other healers (an experiment that sweeps
    ``healing=none,lora,kd`` sets their shared ones) are ignored."""

    name: str = "none"
    ignores_settings: ClassVar[bool] = True

    @property
    def active(self) -> bool:
        return False

    def heal(self, job: JobState, data: HealingText | None) -> tuple[torch.nn.Module, HealResult]:
        raise AssertionError("healing=none has nothing to run")
