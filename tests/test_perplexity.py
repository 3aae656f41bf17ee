"""Perplexity windows score every token at most once, and the loss equals a hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from layerprune.data.text import load_documents
from layerprune.evaluate.perplexity import Windows, perplexity, token_stream, windows
from layerprune.models.load import load_model
from tests.conftest import tiny_config


@pytest.mark.parametrize(
    ("n", "ctx", "stride"), [(100, 16, 16), (100, 16, 4), (17, 16, 16), (5, 16, 8)]
)
def test_windows_score_each_token_at_most_once(n, ctx, stride):
    scored = []
    for begin, end, k in windows(n, ctx, stride):
        assert end - begin <= ctx and 0 < k <= end - begin - 1
        scored += list(range(end - k, end))
    assert len(scored) == len(set(scored)) and min(scored) >= 1
    if stride < ctx:  # overlapping windows score every token but the first
        assert scored == list(range(1, n))
    else:  # disjoint windows skip exactly each window's first token
        assert sorted(set(range(n)) - set(scored)) == list(range(0, n, ctx))


def test_loss_equals_hand_computation():
    lm = load_model(tiny_config("llama"))
    ids = torch.randint(0, 256, (40,))
    # one window of the whole stream: mean NLL of tokens 1..39 given their prefix
    r = perplexity(lm.model, ids, Windows(40, 40))
    logp = torch.log_softmax(lm.model(ids[None]).logits[0, :-1].double(), -1)
    hand = -logp.gather(-1, ids[1:, None]).mean().item()
    assert r.tokens == 39 and r.loss == pytest.approx(hand, rel=1e-5)
    assert r.perplexity == pytest.approx(math.exp(hand), rel=1e-5)
    # sliding windows with stride 8: batched and unbatched give the same result
    a = perplexity(lm.model, ids, Windows(16, 8, 1))
    b = perplexity(lm.model, ids, Windows(16, 8, 8))
    assert a.tokens == b.tokens == 39 and a.loss == pytest.approx(b.loss, rel=1e-6)


def test_token_stream_joins_with_eos():
    lm = load_model(tiny_config("llama"))
    ids = token_stream(lm.tokenizer, ["ab", "c"])
    assert ids.tolist() == [97, 98, 256, 99, 256]
    assert token_stream(lm.tokenizer, ["abcdef", "g"], max_tokens=3).tolist() == [97, 98, 99]


@pytest.mark.real
def test_smollm2_perplexity_is_sane(smollm2):
    docs = load_documents("wiki", "evaluation")
    ids = token_stream(smollm2.tokenizer, docs, max_tokens=4096)
    r = perplexity(smollm2.model, ids, Windows(512, 512))
    # SmolLM2-135M-Instruct on Wikipedia prose: measured ~24 on 16k tokens
    assert 8 < r.perplexity < 60, r.perplexity
