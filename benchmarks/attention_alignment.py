"""Why the shared scorer aligns long options: float32 attention rounds by key index.

Stock lm-eval runs an option right after its context; a packed row (``prefix_plan.pack``) puts
masked keys (its siblings) between them. This script runs one causal attention (SmolLM2's 9
heads of 64) twice: keys as stock lays them out, and with ``gap`` masked keys inserted between
context and option (plus ``tail`` masked keys at the end, as right padding does). It prints the
largest difference of the option's outputs. On a 2-core AVX-512 CPU (torch 2.13, SDPA): 0 for
gaps that are multiples of 16, about 1.2e-7 to 1.8e-7 otherwise (one float32 rounding step); a
tail that moves the key count past a multiple of 16 differs too.

    .venv/bin/python benchmarks/attention_alignment.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

HEADS, DIM, CONTEXT, OPTION = 9, 64, 40, 30


def option_difference(gap: int, tail: int, seed: int = 0) -> float:
    """Max |difference| of the option tokens' attention output: stock's layout vs ``gap``
    masked keys before the option and ``tail`` after it."""
    g = torch.Generator().manual_seed(seed)
    n = CONTEXT + OPTION
    q, k, v = (torch.randn(1, HEADS, n, DIM, generator=g) for _ in range(3))
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    stock = F.scaled_dot_product_attention(q, k, v, attn_mask=causal)

    width = n + gap + tail
    at = torch.tensor(list(range(CONTEXT)) + list(range(CONTEXT + gap, CONTEXT + gap + OPTION)))
    Q, K, V = (torch.zeros(1, HEADS, width, DIM) for _ in range(3))
    Q[:, :, at], K[:, :, at], V[:, :, at] = q, k, v
    mask = torch.eye(width, dtype=torch.bool)  # a masked token sees itself (no empty row)
    mask[at[:, None], at[None, :]] = causal
    packed = F.scaled_dot_product_attention(Q, K, V, attn_mask=mask)[:, :, at]
    return (packed - stock)[:, :, CONTEXT:].abs().max().item()


def main() -> None:
    print(f"context {CONTEXT}, option {OPTION} tokens; max |difference| of the option's outputs")
    for tail in (0, 3, 16):
        row = "  ".join(
            f"gap {gap:2d}: {option_difference(gap, tail):.1e}"
            for gap in (0, 1, 5, 8, 12, 16, 32, 48)
        )
        print(f"tail {tail:2d} | {row}")


if __name__ == "__main__":
    main()
