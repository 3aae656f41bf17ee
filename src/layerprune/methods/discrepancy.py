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

import torch

ON_LOGITS = ("js", "js_code", "kl")
ON_HIDDEN = ("angular", "l2")
METRICS = ON_LOGITS + ON_HIDDEN


def _mixture_log(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    return torch.logaddexp(logp, logq) - torch.log(torch.tensor(2.0, dtype=logp.dtype))


def discrepancy_sum(metric: str, original: torch.Tensor, pruned: torch.Tensor) -> float:
    """Sum over positions (``l2``: over sequences) of the metric; inputs as described above.

    For logit metrics ``original`` is already log-softmaxed (computed once); ``pruned`` is raw.
    """
    if metric in ON_LOGITS:
        logp = original.double()
        logq = torch.log_softmax(pruned.double(), dim=-1)
        p, q = logp.exp(), logq.exp()
        if metric == "kl":
            per_pos = (p * (logp - logq)).sum(-1)
        else:
            logm = _mixture_log(logp, logq)
            if metric == "js":
                per_pos = 0.5 * ((p * (logp - logm)).sum(-1) + (q * (logq - logm)).sum(-1))
            else:  # js_code
                m = logm.exp()
                per_pos = 0.5 * ((m * (logm - logp)).sum(-1) + (m * (logm - logq)).sum(-1))
                per_pos = per_pos / original.shape[-1]
        return float(per_pos.sum())
    a, b = original.double(), pruned.double()
    if metric == "angular":
        cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1, 1)
        return float((torch.arccos(cos) / torch.pi).sum())
    if metric == "l2":
        return float((a - b).flatten(1).norm(dim=-1).sum())
    raise ValueError(f"unknown discrepancy metric '{metric}'; one of {METRICS}")


def units(metric: str, batch: torch.Tensor) -> int:
    """How many terms ``discrepancy_sum`` added for ``batch`` ([B, T]): positions or sequences."""
    return batch.shape[0] if metric == "l2" else batch.numel()
