"""The scan stage: calibration text -> (cached) ``Scan``."""

from __future__ import annotations

from layerprune.config import CalibrationConfig
from layerprune.data.calibration import batches, calibration_sequences
from layerprune.data.text import Text
from layerprune.models.load import LoadedModel
from layerprune.scan.cache import cached_scan, scan_key
from layerprune.scan.residual import Scan, scan_model


def calibrated_scan(lm: LoadedModel, calibration: CalibrationConfig) -> tuple[Scan, bool]:
    """The scan of ``lm`` on its calibration sequences; ``(scan, cache_hit)``. Fewer sequences
    than asked stops here, before any forward pass (unless ``allow_fewer``)."""
    c = calibration
    text = Text(c.source, c.hub)
    where = text.name(c.split)
    docs = text.documents(c.split)
    seqs = calibration_sequences(
        lm.tokenizer, docs, c.num_sequences, c.seq_len, c.seed, c.allow_fewer, where
    )
    source, split = c.source.value, c.split.value
    extra = {"source": source, "split": split, "capture": "block-inputs+last-output"}
    key = scan_key(lm.cache_key(), seqs, extra)  # the exact tokens: any text, any count

    def compute() -> Scan:
        pad = lm.tokenizer.pad_token_id
        scan = scan_model(lm.model, lm.adapter, batches(seqs, c.batch_size, pad))
        scan.meta = {
            "key": key,
            "model": lm.identity,
            "source": source,
            "seq_len": c.seq_len,
            "num_sequences": len(seqs),
            "asked": c.num_sequences,
        }
        return scan

    return cached_scan(key, compute)
