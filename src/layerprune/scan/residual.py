"""Distances between residual streams, from one forward pass over calibration batches.

x(l) is the residual stream entering block l (l < L) and x(L) the output of the last block
*before* the final norm. For every pair j < k we want the mean over calibration data of a
distance between x(j) and x(k); d(l, n) of Gromov et al. is the pair (l, l + n). All three
metrics are functions of dot products, so per token we need only the Gram matrix
G[j, k] = x(j) . x(k) over the L + 1 states:

    angular = arccos(cos) / pi        cosine = 1 - cos        l2 = |x(k) - x(j)| / |x(j)|

Per batch, the non-pad token states of every block are held once (one batch, never the whole
calibration set), reduced to per-token Gram matrices and summed into L+1 x L+1 totals, for both
token reductions: ``last`` (the last non-pad token of each sequence, Gromov) and ``mean`` (all
non-pad tokens). The LM head is never run: the scan stops at the last block.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from layerprune.data.calibration import Batch
from layerprune.models.adapter import BlockAdapter, input_device

METRICS = ("angular", "cosine", "l2")
REDUCTIONS = ("last", "mean")


@dataclass
class Scan:
    """Mean distances D[j, k] (j < k) between residual states, per metric and reduction."""

    num_blocks: int
    distances: dict[str, torch.Tensor]  # "<metric>/<reduction>" -> [L+1, L+1] float64
    num_sequences: int
    num_tokens: int
    meta: dict = field(default_factory=dict)

    def matrix(self, metric: str, reduction: str) -> torch.Tensor:
        """D[j, k] for j < k (the rest is NaN)."""
        key = f"{metric}/{reduction}"
        if key not in self.distances:
            raise KeyError(f"scan has no {key}; metrics {METRICS}, reductions {REDUCTIONS}")
        return self.distances[key]

    def curve(self, metric: str, reduction: str, n: int) -> torch.Tensor:
        """d(l, n) for l = 0 .. L - n: distance between the input of block l and of block l + n."""
        d = self.matrix(metric, reduction)
        return torch.stack([d[l, l + n] for l in range(self.num_blocks - n + 1)])

    @property
    def block_influence(self) -> torch.Tensor:
        """ShortGPT's BI_i = 1 - mean over tokens of cos(x(i), x(i+1)), one per block."""
        d = self.matrix("cosine", "mean")
        return torch.stack([d[i, i + 1] for i in range(self.num_blocks)])

    def to_dict(self) -> dict:
        return {
            "num_blocks": self.num_blocks,
            "distances": self.distances,
            "num_sequences": self.num_sequences,
            "num_tokens": self.num_tokens,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Scan:
        return cls(**d)


def pair_distances(gram: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-token distances for every layer pair from Gram matrices ``[N, S, S]``."""
    sq = gram.diagonal(dim1=-2, dim2=-1).clamp_min(0)  # |x(j)|^2, [N, S]
    norm = sq.sqrt()
    denom = (norm[:, :, None] * norm[:, None, :]).clamp_min(1e-30)
    cos = (gram / denom).clamp(-1.0, 1.0)
    diff = (sq[:, :, None] + sq[:, None, :] - 2 * gram).clamp_min(0).sqrt()
    return {
        "angular": torch.arccos(cos) / torch.pi,
        "cosine": 1.0 - cos,
        "l2": diff / norm[:, :, None].clamp_min(1e-30),  # relative to the earlier state x(j)
    }


def batch_sums(states: list[torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """One batch's sums of per-token distances, ``"<metric>/<reduction>"`` -> ``[S, S]``
    (CPU float64): ``states`` x(0..L) as ``[B, T, H]``, each on the device its block ran on
    (several GPUs for a model split with ``device_map``), ``mask`` ``[B, T]`` (1: real token).
    Non-pad tokens are picked on each state's device and gathered on the mask's."""
    keep = mask.bool()
    x = torch.stack([s[keep.to(s.device)].to(mask.device).float() for s in states])  # [S, N, H]
    gram = torch.einsum("jnh,knh->njk", x, x)
    last_rows = mask.sum(1).cumsum(0) - 1  # row of each sequence's last real token
    sums = {}
    for metric, d in pair_distances(gram).items():
        sums[f"{metric}/mean"] = d.sum(0).double().cpu()
        sums[f"{metric}/last"] = d[last_rows].sum(0).double().cpu()
    return sums


def block_output(x) -> torch.Tensor:
    """A decoder block's hidden states, whether it returns a tensor or a tuple."""
    return x[0] if isinstance(x, tuple) else x


@torch.no_grad()
def scan_model(
    model: torch.nn.Module, adapter: BlockAdapter, batches: list[Batch], progress: bool = True
) -> Scan:
    """One forward pass per batch; returns mean distances for all metrics and reductions."""
    blocks = adapter.blocks(model)
    num_blocks = len(blocks)
    states: list[torch.Tensor | None] = [None] * (num_blocks + 1)
    device = input_device(model)

    def grab(i: int):
        def pre_hook(module, args, kwargs):
            states[i] = block_output(args[0] if args else kwargs["hidden_states"])

        return pre_hook

    def last_hook(module, args, kwargs, output):
        states[num_blocks] = block_output(output)

    handles = [b.register_forward_pre_hook(grab(i), with_kwargs=True) for i, b in enumerate(blocks)]
    handles.append(blocks[-1].register_forward_hook(last_hook, with_kwargs=True))
    size = num_blocks + 1
    sums = {
        f"{m}/{r}": torch.zeros(size, size, dtype=torch.float64)
        for m in METRICS
        for r in REDUCTIONS
    }
    n_seq = n_tok = 0
    try:
        for batch in tqdm(batches, desc="scan", unit="batch", disable=not progress):
            mask = batch.attention_mask.to(device)
            adapter.decoder(model)(
                input_ids=batch.input_ids.to(device), attention_mask=mask, use_cache=False
            )
            for key, total in batch_sums(states, mask).items():
                sums[key] += total
            n_tok += int(mask.sum())
            n_seq += mask.shape[0]
            states[:] = [None] * size
    finally:
        for h in handles:
            h.remove()
    upper = torch.ones(size, size, dtype=torch.bool).triu(1)
    distances = {}
    for key, total in sums.items():
        mean = total / (n_tok if key.endswith("/mean") else n_seq)
        distances[key] = torch.where(upper, mean, torch.full_like(mean, float("nan")))
    return Scan(num_blocks, distances, n_seq, n_tok)
