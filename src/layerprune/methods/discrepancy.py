"""How far a pruned model's output is from the original's (FinerCut's selection criterion).

All take the original's and the pruned model's outputs for one batch, ``[B, T, V]`` logits or
``[B, T, H]`` final hidden states, and return the *sum* over positions (or sequences), so
batches can be accumulated and divided once.

- ``js``: Jensen-Shannon divergence as the paper defines it, 1/2 [KL(P||M) + KL(Q||M)].
- ``js_code``: as the official code computes it, 1/2 [KL(M||P) + KL(M||Q)] divided by the
  vocabulary size (``F.kl_div(..., reduction="mean")``). Not the same number, often the same order.
- ``kl``: KL(original || pruned).
- ``angular``: arccos(cos) / pi between final hidden states, per position.
- ``l2``: Frobenius norm of the final-hidden-state difference, per sequence.
"""

from __future__ import annotations

import math

import torch

ON_LOGITS = ("js", "js_code", "kl")
ON_HIDDEN = ("angular", "l2")
METRICS = ON_LOGITS + ON_HIDDEN


_CHUNK_ELEMENTS = 1 << 20  # rows of the vocabulary-sized arithmetic done at once (cache-sized)


def _logit_metric(metric: str, logp: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per-position value of a logit metric for 2-D ``[N, V]`` inputs."""
    logq = torch.log_softmax(logits, dim=-1)
    p, q = logp.exp(), logq.exp()
    if metric == "kl":
        return (p * (logp - logq)).sum(-1)
    logm = torch.logaddexp(logp, logq) - math.log(2.0)
    if metric == "js":
        return 0.5 * ((p * (logp - logm)).sum(-1) + (q * (logq - logm)).sum(-1))
    m = logm.exp()  # js_code
    return 0.5 * ((m * (logm - logp)).sum(-1) + (m * (logm - logq)).sum(-1)) / logp.shape[-1]


def discrepancy_sum(metric: str, original: torch.Tensor, pruned: torch.Tensor) -> float:
    """Sum over positions (``l2``: over sequences) of the metric; inputs as described above.

    For logit metrics ``original`` is already log-softmaxed (computed once); ``pruned`` is raw.
    Arithmetic runs in the inputs' precision, at least float32 (float64 inputs give float64),
    in row chunks so the vocabulary-sized temporaries stay in cache; per-position values are
    accumulated in float64 on the inputs' device (a GPU's: no CPU tensor meets them).
    """
    dtype = torch.promote_types(torch.promote_types(original.dtype, pruned.dtype), torch.float32)
    if metric in ON_LOGITS:
        vocab = original.shape[-1]
        logp = original.reshape(-1, vocab)
        logits = pruned.reshape(-1, vocab)
        rows = max(1, _CHUNK_ELEMENTS // vocab)
        total = torch.zeros((), dtype=torch.float64, device=logp.device)
        for s in range(0, logp.shape[0], rows):
            chunk = _logit_metric(
                metric, logp[s : s + rows].to(dtype), logits[s : s + rows].to(dtype)
            )
            total += chunk.double().sum()
        return float(total)
    a, b = original.to(dtype), pruned.to(dtype)
    if metric == "angular":
        cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1, 1)
        return float((torch.arccos(cos) / torch.pi).double().sum())
    if metric == "l2":
        return float((a - b).flatten(1).norm(dim=-1).double().sum())
    raise ValueError(f"unknown discrepancy metric '{metric}'; one of {METRICS}")


def units(metric: str, batch: torch.Tensor) -> int:
    """How many terms ``discrepancy_sum`` added for ``batch`` ([B, T]): positions or sequences."""
    return batch.shape[0] if metric == "l2" else batch.numel()
