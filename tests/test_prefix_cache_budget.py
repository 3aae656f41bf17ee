"""The shared-prefix scorer copies its prefix's KV cache once per row of a call: the rows per
call are bounded by ``ScoringProfile.prefix_cache_bytes``, and the answers stay stock's."""

from __future__ import annotations

import pytest
import torch

from layerprune.evaluate import shared_prefix
from layerprune.evaluate.shared_prefix import (
    CountingLM,
    SharedPrefixLM,
    _cache_bytes,
    profile_for,
)
from layerprune.models.load import load_model
from tests.conftest import tiny_config


def _requests() -> list[tuple]:
    """Six questions on one 40-token prefix, two options each (token-level requests)."""
    g = torch.Generator().manual_seed(0)
    prefix = torch.randint(3, 250, (40,), generator=g).tolist()
    out = []
    for q in range(6):
        question = prefix + torch.randint(3, 250, (4 + q,), generator=g).tolist()
        for o in range(2):
            out.append((None, question, torch.randint(3, 250, (2 + o,), generator=g).tolist()))
    return out


def test_rows_per_call_respect_the_prefix_cache_budget(monkeypatch):
    lm = load_model(tiny_config("llama", layers=4))
    kw = {"pretrained": lm.model, "tokenizer": lm.tokenizer, "batch_size": 16, "device": "cpu"}
    kw["softmax_dtype"] = torch.float64  # sums compared to 1e-4 (test_shared_prefix._kw)
    requests = _requests()
    stock = CountingLM(**kw)._loglikelihood_tokens(requests)

    copies: list[tuple[int, int]] = []  # (rows, bytes) of each expanded prefix cache
    expanded = shared_prefix._expanded

    def recorded(cache, rows):
        out = expanded(cache, rows)
        copies.append((rows, _cache_bytes(out)))
        return out

    monkeypatch.setattr(shared_prefix, "_expanded", recorded)

    def score(budget: int | None) -> list[tuple[float, bool]]:
        copies.clear()
        profile = profile_for("cpu", prefix_cache_bytes=budget)
        return SharedPrefixLM(profile=profile, **kw)._loglikelihood_tokens(requests)

    unbounded = score(None)
    calls = [c for c in copies if c[0] > 1]  # the first is the cache check's own, one row
    per_row = calls[0][1] // calls[0][0]
    assert per_row == 40 * _kv_bytes_per_token(lm.model)
    assert max(rows for rows, _ in calls) == 6  # the plan runs the six rows at once

    budget = 2 * per_row + per_row // 2
    bounded = score(budget)
    calls = [c for c in copies if c[1] > per_row]
    assert calls and all(size <= budget for _, size in calls)
    assert sorted(rows for rows, _ in copies[1:]) == [2, 2, 2]

    for answers in (unbounded, bounded):
        assert [g for _, g in answers] == [g for _, g in stock]
        assert [a for a, _ in answers] == pytest.approx([a for a, _ in stock], abs=1e-4)


def _kv_bytes_per_token(model) -> int:
    """Keys and values of one token in every layer (float32)."""
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim * 4


def test_budget_is_a_model_argument():
    """From lm-eval's command line it is set like the other constants (``--model_args
    pretrained=DIR,prefix_cache_bytes=...``); the profiles' own are 2 GiB (CPU), 8 GiB (CUDA)."""
    lm = load_model(tiny_config("llama", layers=2))
    kw = {"pretrained": lm.model, "tokenizer": lm.tokenizer, "batch_size": 16, "device": "cpu"}
    assert SharedPrefixLM(prefix_cache_bytes="1000", **kw).profile.prefix_cache_bytes == 1000
    assert profile_for("cpu").prefix_cache_bytes == 2 << 30
    assert profile_for("cuda:1").prefix_cache_bytes == 8 << 30
