"""Fixed-length training sequences packed from a token stream (no padding, no waste)."""

from __future__ import annotations

import random

import torch


def pack(tokenizer, documents: list[str], seq_len: int, seed: int) -> torch.Tensor:
    """Documents in seeded order, joined with EOS, cut into ``[N, seq_len]`` (the tail dropped)."""
    order = list(range(len(documents)))
    random.Random(seed).shuffle(order)
    ids: list[int] = []
    for i in order:
        ids.extend(tokenizer(documents[i], add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    n = len(ids) // seq_len
    if n == 0:
        raise ValueError(f"{len(ids)} tokens are fewer than one sequence of {seq_len}")
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)
