"""Scorers as plug-ins (``conf/scorer/``): which lm-eval model object scores the requests.

- ``shared`` (default): ``SharedPrefixLM``, stock lm-eval's answers without running any token
  twice (``evaluate/shared_prefix.py``); its constants are its device's ``ScoringProfile``,
  each settable here (null = the profile's);
- ``stock``: lm-eval's own ``HFLM``, counted (``batch_size=0``: 16 on CPU, the fastest
  measured here; lm-eval's ``auto`` on CUDA).

``request_cache``: answers go through lm-eval's request cache, one database per model
identity and scorer (``request_cache.py``), so no request is scored twice.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

CPU_BATCH_SIZE = 16  # stock's fastest of 1/4/8/16/32/64 on 2 CPU cores (eval_throughput.py)


@dataclass
class Scorer(ABC):
    """Base of the scorers (module doc)."""

    name: str = ""
    request_cache: bool = True  # one lm-eval request cache per model (never scores twice)

    @abstractmethod
    def lm(self, model: torch.nn.Module, tokenizer) -> Any:
        """The lm-eval model object that scores ``model``."""

    def key(self) -> dict[str, Any]:
        """What of this scorer changes an answer (part of the request cache's key)."""
        return {"scoring": self.name}

    def cache_prefix(self, identity: dict[str, Any] | None, lm) -> Path | None:
        """The request cache database of ``identity`` (None: no cache)."""
        if identity is None or not self.request_cache:
            return None
        from layerprune.evaluate.request_cache import cache_prefix

        return cache_prefix(identity, self.key(), lm.max_length)


@dataclass
class StockScorer(Scorer):
    """lm-eval's ``HFLM`` (module doc)."""

    name: str = "stock"
    batch_size: int = 0  # 0: 16 on CPU, "auto" on CUDA

    def lm(self, model: torch.nn.Module, tokenizer) -> Any:
        from layerprune.evaluate.shared_prefix import CountingLM

        device = next(model.parameters()).device
        batch = self.batch_size or ("auto" if device.type == "cuda" else CPU_BATCH_SIZE)
        return CountingLM(
            pretrained=model, tokenizer=tokenizer, batch_size=batch, device=str(device)
        )


@dataclass
class SharedScorer(Scorer):
    """The shared-prefix scorer (module doc); ``None`` settings take the device profile's."""

    name: str = "shared"
    align: int | None = None
    align_min: int | None = None
    min_call_tokens: int | None = None
    batch_tokens: int | None = None
    call_tokens: int | None = None
    join_tokens: int | None = None

    def profile(self, device: str):
        from layerprune.evaluate.shared_prefix import profile_for

        return profile_for(device, **self._overrides())

    def _overrides(self) -> dict[str, int | None]:
        keys = ("align", "align_min", "min_call_tokens", "batch_tokens", "call_tokens")
        return {k: getattr(self, k) for k in (*keys, "join_tokens")}

    def lm(self, model: torch.nn.Module, tokenizer) -> Any:
        from layerprune.evaluate.shared_prefix import SharedPrefixLM

        device = next(model.parameters()).device
        return SharedPrefixLM(
            pretrained=model,
            tokenizer=tokenizer,
            # stock's batch size for what stays stock (rolling log-likelihood, generation)
            batch_size="auto" if device.type == "cuda" else CPU_BATCH_SIZE,
            device=str(device),
            profile=self.profile(device.type),
        )

    def key(self) -> dict[str, Any]:
        """Settings away from the device profile change rounding: they key their own cache."""
        changed = {k: v for k, v in self._overrides().items() if v is not None}
        return {"scoring": self.name, **({"profile": changed} if changed else {})}
