"""Calibration batches: one sequence per document (Gromov et al. use the last token of each)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, T], right-padded
    attention_mask: torch.Tensor  # [B, T], 1 = real token


def calibration_sequences(
    tokenizer, documents: list[str], num_sequences: int, seq_len: int, seed: int
) -> list[list[int]]:
    """``num_sequences`` documents (seeded order), each cut to its first ``seq_len`` tokens.

    Documents shorter than 2 tokens are skipped; fewer documents than asked is an error only
    when none are left (the split size is reported instead).
    """
    order = list(range(len(documents)))
    random.Random(seed).shuffle(order)
    seqs = []
    for i in order:
        ids = tokenizer(documents[i], add_special_tokens=False)["input_ids"][:seq_len]
        if len(ids) >= 2:
            seqs.append(ids)
        if len(seqs) == num_sequences:
            break
    if not seqs:
        raise ValueError("no calibration document has at least 2 tokens")
    return seqs


def batches(sequences: list[list[int]], batch_size: int, pad_id: int) -> list[Batch]:
    """Right-padded batches with masks (right padding keeps causal states of real tokens exact)."""
    out = []
    for i in range(0, len(sequences), batch_size):
        chunk = sequences[i : i + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, s in enumerate(chunk):
            ids[row, : len(s)] = torch.tensor(s)
            mask[row, : len(s)] = 1
        out.append(Batch(ids, mask))
    return out
