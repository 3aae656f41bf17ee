"""The scan stage: calibration text -> (cached) ``Scan``."""

from __future__ import annotations

from layerprune.data.calibration import batches, calibration_sequences
from layerprune.data.text import load_documents
from layerprune.models.load import LoadedModel
from layerprune.scan.cache import cached_scan, scan_key
from layerprune.scan.residual import Scan, scan_model


def calibrated_scan(
    lm: LoadedModel,
    source: str,
    split: str,
    num_sequences: int,
    seq_len: int,
    batch_size: int,
    seed: int,
) -> tuple[Scan, bool]:
    """The scan of ``lm`` on its calibration sequences; ``(scan, cache_hit)``."""
    docs = load_documents(source, split)
    seqs = calibration_sequences(lm.tokenizer, docs, num_sequences, seq_len, seed)
    key = scan_key(
        lm.identity,
        str(lm.dtype),
        seqs,
        {"source": source, "split": split, "capture": "block-inputs+last-output"},
    )

    def compute() -> Scan:
        pad = lm.tokenizer.pad_token_id
        scan = scan_model(lm.model, lm.adapter, batches(seqs, batch_size, pad))
        scan.meta = {"key": key, "model": lm.identity, "source": source, "seq_len": seq_len}
        return scan

    return cached_scan(key, compute)
