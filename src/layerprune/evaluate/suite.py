"""Evaluate a model on a benchmark suite: lm-eval tasks + perplexity / loss on held-out text."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from layerprune.config import BenchmarkConfig, PerplexityConfig
from layerprune.data.text import Text
from layerprune.evaluate.harness import evaluate_tasks
from layerprune.evaluate.perplexity import Windows, perplexity, token_stream
from layerprune.evaluate.scorers import Scorer

log = logging.getLogger(__name__)


@dataclass
class SuiteResult:
    metrics: dict[str, float] = field(default_factory=dict)  # "<task>/<metric>"
    timings: dict[str, float] = field(default_factory=dict)  # "eval_<task>_s"
    eval_cache: dict[str, int] = field(default_factory=lambda: {"hits": 0, "misses": 0})
    items: dict[str, dict[str, list]] = field(default_factory=dict)  # per task: item columns


def evaluate_suite(
    model: torch.nn.Module,
    tokenizer,
    benchmark: BenchmarkConfig,
    scorer: Scorer,
    identity: dict[str, Any] | None = None,
) -> SuiteResult:
    """Metrics, per-item results, per-task timings and request-cache counts (requests
    answered by the cache / by the model) of one model on the suite. ``identity``: what the
    model is, for the request cache (None: no cache)."""
    out = SuiteResult()
    metrics, timings = out.metrics, out.timings
    if benchmark.tasks:
        lm = scorer.lm(model, tokenizer)
        tasks = [(t.name, t.num_fewshot, t.limit) for t in benchmark.tasks]
        cache = scorer.cache_prefix(identity, lm)
        for name, result in evaluate_tasks(lm, tasks, benchmark.data.value, cache).items():
            metrics.update(result.metrics)
            out.items[name] = result.items
            timings[f"eval_{name}_s"] = round(result.seconds, 3)
            out.eval_cache["hits"] += result.hits
            out.eval_cache["misses"] += result.misses
    for p in benchmark.perplexity:
        out.metrics.update(_loss(model, tokenizer, p, timings))
    return out


def _loss(model: torch.nn.Module, tokenizer, p: PerplexityConfig, timings: dict) -> dict:
    """Loss / perplexity on held-out text (``<source>/loss`` ...); its time into ``timings``."""
    start = time.perf_counter()
    text = Text(p.source, p.hub)
    name = text.label
    ids = token_stream(tokenizer, text.documents(p.split), p.max_tokens)
    r = perplexity(model, ids, Windows(p.context_length, p.stride, p.batch_size), desc=name)
    words = len(tokenizer.decode(ids).split())
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
    return {
        f"{name}/loss": r.loss,
        f"{name}/ppl": r.perplexity,
        f"{name}/word_ppl": r.word_perplexity(words),
        f"{name}/tokens": r.tokens,
        f"{name}/context_length": r.context_length,
        f"{name}/stride": r.stride,
    }
