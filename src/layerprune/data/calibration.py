"""Calibration batches: one sequence per document (Gromov et al. use the last token of each).

Asking for more sequences than the text holds is an error naming what there is, unless
``calibration.allow_fewer`` allows fewer (then the number used is logged and kept with the
scan): a paper-size run never shrinks silently. ``check_calibration`` makes the same check
before the model is loaded, as far as it can without a tokenizer.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import torch

from layerprune.config import CalibrationConfig, TextSource
from layerprune.errors import LayerpruneError

log = logging.getLogger(__name__)
ALLOW = "lower calibration.num_sequences or set calibration.allow_fewer=true"


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, T], right-padded
    attention_mask: torch.Tensor  # [B, T], 1 = real token


def calibration_sequences(
    tokenizer,
    documents: list[str],
    num_sequences: int,
    seq_len: int,
    seed: int,
    allow_fewer: bool = False,
    where: str = "the calibration text",
) -> list[list[int]]:
    """``num_sequences`` documents (seeded order), each cut to its first ``seq_len`` tokens.

    Documents shorter than 2 tokens are skipped. Fewer usable documents than asked is a
    ``LayerpruneError`` naming how many ``where`` holds, unless ``allow_fewer`` (never none).
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
    check_count(
        len(seqs), num_sequences, f"{where} holds {len(seqs)} documents of >= 2 tokens", allow_fewer
    )
    return seqs


def check_count(have: int, want: int, holds: str, allow_fewer: bool) -> None:
    """Raise (one line) when ``have < want`` unless ``allow_fewer``; never when ``have == 0``
    is allowed. ``holds`` says what the text holds (``c4/calibration holds 144 ...``)."""
    if have >= want:
        return
    if have == 0 or not allow_fewer:
        raise LayerpruneError(f"calibration.num_sequences={want} but {holds}; {ALLOW}")
    log.warning("calibration: %d of the %d sequences asked (%s; allow_fewer)", have, want, holds)


def check_calibration(c: CalibrationConfig, packed: bool, tokenizer=None) -> None:
    """The count check before any model is loaded: one sequence per document (``packed``
    False, the block scan) or packed sequences of ``seq_len`` tokens (FinerCut, ppl).

    Without a tokenizer only what needs none is checked: the number of offline documents, or
    a Hub range's ``take``, against ``num_sequences`` (per document). With one, the text's
    sequences are counted exactly (the Hub range is streamed)."""
    from layerprune.data.text import Text

    text = Text(c.source, c.hub)
    where = text.name(c.split)
    if tokenizer is None:
        if packed:
            return
        if c.source == TextSource.hub:
            take = c.hub.range(c.split).take
            holds = f"{where} reads at most {take} documents (hub take)"
            check_count(min(take, c.num_sequences), c.num_sequences, holds, c.allow_fewer)
            return
        docs = len(text.documents(c.split))
        holds = f"{where} holds {docs} documents"
        check_count(min(docs, c.num_sequences), c.num_sequences, holds, c.allow_fewer)
        return
    docs = text.documents(c.split)
    if packed:
        packed_sequences(tokenizer, docs, c, where)
    else:
        calibration_sequences(
            tokenizer, docs, c.num_sequences, c.seq_len, c.seed, c.allow_fewer, where
        )


def packed_sequences(tokenizer, documents: list[str], c: CalibrationConfig, where: str):
    """``[n, seq_len]`` tokens packed from ``documents`` (joined with EOS, seeded order),
    ``n = num_sequences``: fewer is an error naming what ``where`` holds, unless allowed."""
    from layerprune.data.packing import pack

    try:
        seqs = pack(tokenizer, documents, c.seq_len, c.seed)
    except ValueError:  # not one whole sequence
        seqs = torch.empty((0, c.seq_len), dtype=torch.long)
    holds = f"{where} holds {len(seqs)} packed sequences of {c.seq_len} tokens"
    check_count(min(len(seqs), c.num_sequences), c.num_sequences, holds, c.allow_fewer)
    return seqs[: c.num_sequences]


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
