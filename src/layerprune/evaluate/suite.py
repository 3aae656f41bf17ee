"""Evaluate a model on a benchmark suite: lm-eval tasks + perplexity / loss on held-out text."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from layerprune.config import PerplexityConfig
from layerprune.data.text import load_documents
from layerprune.evaluate.harness import evaluate_tasks
from layerprune.evaluate.perplexity import perplexity, token_stream

log = logging.getLogger(__name__)


@dataclass
class SuiteResult:
    metrics: dict[str, float] = field(default_factory=dict)  # "<task>/<metric>"
    timings: dict[str, float] = field(default_factory=dict)  # "eval_<task>_s"
    eval_cache: dict[str, int] = field(default_factory=lambda: {"hits": 0, "misses": 0})


def evaluate_suite(
    model: torch.nn.Module,
    tokenizer,
    tasks: list[tuple[str, int, int | None]],
    perplexities: list[PerplexityConfig],
    data: str = "offline",
    batch_size: int = 0,
    scoring: str = "shared",
    cache_identity: dict[str, Any] | None = None,
) -> SuiteResult:
    """Metrics, per-task timings and request-cache counts (requests answered by the cache /
    by the model) of one model on the suite."""
    out = SuiteResult()
    metrics, timings = out.metrics, out.timings
    if tasks:
        results = evaluate_tasks(
            model, tokenizer, tasks, data, batch_size, scoring, cache_identity
        ).items()
        for name, result in results:
            metrics.update(result.metrics)
            timings[f"eval_{name}_s"] = round(result.seconds, 3)
            out.eval_cache["hits"] += result.hits
            out.eval_cache["misses"] += result.misses
    for p in perplexities:
        start = time.perf_counter()
        name = p.source.value
        ids = token_stream(tokenizer, load_documents(name, p.split.value), p.max_tokens)
        r = perplexity(model, ids, p.context_length, p.stride, p.batch_size, desc=name)
        words = len(tokenizer.decode(ids).split())
        metrics.update(
            {
                f"{name}/loss": r.loss,
                f"{name}/ppl": r.perplexity,
                f"{name}/word_ppl": r.word_perplexity(words),
                f"{name}/tokens": r.tokens,
                f"{name}/context_length": r.context_length,
                f"{name}/stride": r.stride,
            }
        )
        timings[f"eval_{name}_s"] = round(time.perf_counter() - start, 3)
        log.info(
            "%s: loss %.4f, token ppl %.3f, word ppl %.3f (%d tokens, context %d, stride %d)",
            name,
            r.loss,
            r.perplexity,
            r.word_perplexity(words),
            r.tokens,
            r.context_length,
            r.stride,
        )
    return out
