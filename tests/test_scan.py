"""The scan against hand and brute-force computations; padding; the cache."""

from __future__ import annotations

import math
import threading
import time

import pytest
import torch

from layerprune.data.calibration import batches
from layerprune.models.load import load_model
from layerprune.scan import cache as cache_mod
from layerprune.scan.residual import Scan, pair_distances, scan_model
from tests.conftest import FAMILIES, tiny_config

SEQS = [list(range(5, 25)), list(range(30, 40)), list(range(60, 96)), [7, 8, 9, 10, 11]]


def test_distances_on_a_hand_built_case():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])
    x = torch.stack([a, b])[:, None, :]  # [S=2, N=1, H=2]
    d = pair_distances(torch.einsum("jnh,knh->njk", x, x))
    assert d["angular"][0, 0, 1].item() == pytest.approx(math.acos(1 / math.sqrt(2)) / math.pi)
    assert d["angular"][0, 0, 1].item() == pytest.approx(0.25)
    assert d["cosine"][0, 0, 1].item() == pytest.approx(1 - 1 / math.sqrt(2))
    assert d["l2"][0, 0, 1].item() == pytest.approx(1.0)  # |b - a| / |a|
    assert d["angular"][0, 1, 1].item() == pytest.approx(0.0, abs=1e-3)


def brute_force_states(lm, seq: list[int]) -> torch.Tensor:
    """x(0..L) of one unpadded sequence: hidden_states with the final norm made an identity."""
    decoder = lm.adapter.decoder(lm.model)
    norm = decoder.norm
    decoder.norm = torch.nn.Identity()
    try:
        with torch.no_grad():
            out = lm.model(torch.tensor([seq]), output_hidden_states=True)
    finally:
        decoder.norm = norm
    return torch.stack(out.hidden_states)[:, 0].double()  # [L+1, T, H]


def angle(u, v):
    cos = (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))
    return torch.arccos(cos.clamp(-1, 1)) / math.pi, 1 - cos, (v - u).norm(dim=-1) / u.norm(dim=-1)


@pytest.mark.parametrize("family", FAMILIES)
def test_scan_equals_brute_force(family):
    lm = load_model(tiny_config(family))
    scan = scan_model(lm.model, lm.adapter, batches(SEQS, 3, 256), progress=False)
    states = [brute_force_states(lm, s) for s in SEQS]
    L = scan.num_blocks
    for n in (1, 3, L):
        for l in range(L - n + 1):
            last = [angle(x[l, -1], x[l + n, -1]) for x in states]
            tok = [angle(x[l], x[l + n]) for x in states]
            for k, metric in enumerate(("angular", "cosine", "l2")):
                want_last = sum(v[k].item() for v in last) / len(SEQS)
                want_mean = torch.cat([v[k] for v in tok]).mean().item()
                assert scan.curve(metric, "last", n)[l].item() == pytest.approx(want_last, abs=1e-5)
                assert scan.curve(metric, "mean", n)[l].item() == pytest.approx(want_mean, abs=1e-5)
    # Block Influence: 1 - mean over tokens of cos(block input, block output)
    for i in range(L):
        cos = torch.cat([torch.cosine_similarity(x[i], x[i + 1], dim=-1) for x in states])
        assert scan.block_influence[i].item() == pytest.approx(1 - cos.mean().item(), abs=1e-5)


def test_padding_does_not_change_distances():
    lm = load_model(tiny_config("qwen2"))
    short, long = SEQS[1], SEQS[2]  # the short one is right-padded in the batch
    alone = [
        scan_model(lm.model, lm.adapter, batches([s], 1, 256), progress=False)
        for s in (short, long)
    ]
    both = scan_model(lm.model, lm.adapter, batches([short, long], 2, 256), progress=False)
    for metric in ("angular", "cosine", "l2"):
        want_last = (alone[0].matrix(metric, "last") + alone[1].matrix(metric, "last")) / 2
        want_mean = (
            alone[0].matrix(metric, "mean") * len(short)
            + alone[1].matrix(metric, "mean") * len(long)
        ) / (len(short) + len(long))
        torch.testing.assert_close(
            both.matrix(metric, "last"), want_last, equal_nan=True, atol=1e-6, rtol=1e-5
        )
        torch.testing.assert_close(
            both.matrix(metric, "mean"), want_mean, equal_nan=True, atol=1e-6, rtol=1e-5
        )


def test_cache_computes_once_even_when_racing(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        time.sleep(0.3)
        return Scan(2, {"angular/last": torch.ones(3, 3, dtype=torch.float64)}, 1, 4)

    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(cache_mod.cached_scan("k", compute, tmp_path))
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(hit for _, hit in results) == [False, True, True]
    assert all(
        torch.equal(s.distances["angular/last"], torch.ones(3, 3, dtype=torch.float64))
        for s, _ in results
    )
    assert [p.name for p in tmp_path.glob("*.pt")] == ["k.pt"]


def test_scan_key_depends_on_tokens_model_and_dtype():
    m = {"base": "m", "dtype": "float32"}  # LoadedModel.cache_key()
    key = cache_mod.scan_key(m, [[1, 2, 3]], {})
    assert key == cache_mod.scan_key(m, [[1, 2, 3]], {})
    assert key != cache_mod.scan_key(m, [[1, 2, 4]], {})
    assert key != cache_mod.scan_key(m, [[1, 2], [3]], {})
    assert key != cache_mod.scan_key({**m, "base": "m2"}, [[1, 2, 3]], {})
    assert key != cache_mod.scan_key({**m, "dtype": "bfloat16"}, [[1, 2, 3]], {})
