"""Scan cache: one scan per (model weights, dtype, calibration tokens, scan code) content hash.

Every job of a sweep over fractions, methods and metrics asks for the same key and all but the
first read the file. A file lock per key (``atomic.cache_lock``) makes racing jobs compute it
once; the write is a temp file + rename, so a reader never sees half a scan.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from layerprune import atomic, paths
from layerprune.integrity import read_or_quarantine
from layerprune.scan.residual import Scan

SCAN_VERSION = 1  # bump when the scan's arithmetic changes: old entries stop matching


def scan_key(model: dict[str, Any], sequences: list[list[int]], extra: dict) -> str:
    """sha256 over everything that determines the scan: the model's numbers (weights, dtype,
    quantisation, device: ``LoadedModel.cache_key``), the exact token ids and ``extra``."""
    h = hashlib.sha256()
    model = dict(model)
    head = {"v": SCAN_VERSION, "model": model.pop("base"), **model, **extra}
    h.update(json.dumps(head, sort_keys=True).encode())
    for seq in sequences:
        h.update(torch.tensor(seq, dtype=torch.int64).numpy().tobytes())
        h.update(b"|")
    return h.hexdigest()[:32]


def cached_scan(
    key: str, compute: Callable[[], Scan], folder: Path | None = None
) -> tuple[Scan, bool]:
    """Return ``(scan, hit)``: the stored scan for ``key`` or a freshly computed and stored one."""
    folder = folder or paths.scan_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.pt"
    with atomic.cache_lock(path):
        load = lambda p: Scan.from_dict(torch.load(p, weights_only=True))  # noqa: E731
        scan = read_or_quarantine(path, load)
        if scan is not None:
            return scan, True
        scan = compute()
        buf = io.BytesIO()
        torch.save(scan.to_dict(), buf)
        atomic.write_bytes(path, buf.getvalue())
        return scan, False
