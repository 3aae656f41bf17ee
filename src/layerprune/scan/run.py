"""The scan stage: calibration text -> (cached) ``Scan``."""

from __future__ import annotations

from layerprune.config import CalibrationConfig
from layerprune.data.calibration import batches, calibration_sequences
from layerprune.data.text import load_documents
from layerprune.models.load import LoadedModel
from layerprune.scan.cache import cached_scan, scan_key
from layerprune.scan.residual import Scan, scan_model


def calibrated_scan(lm: LoadedModel, calibration: CalibrationConfig) -> tuple[Scan, bool]:
    """The scan of ``lm`` on its calibration sequences; ``(scan, cache_hit)``."""
    c = calibration
    source, split, seq_len, batch_size = c.source.value, c.split.value, c.seq_len, c.batch_size
    num_sequences, seed = c.num_sequences, c.seed
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
