"""Scan cache: one scan per (model weights, dtype, calibration tokens, scan code) content hash.

Every job of a sweep over fractions, methods and metrics asks for the same key and all but the
first read the file. A file lock per key makes racing jobs compute it once; the write is a
temp file + rename, so a reader never sees half a scan.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import torch
from filelock import FileLock

from layerprune import atomic, paths
from layerprune.integrity import read_or_quarantine
from layerprune.scan.residual import Scan

SCAN_VERSION = 1  # bump when the scan's arithmetic changes: old entries stop matching


def scan_key(model_identity: str, dtype: str, sequences: list[list[int]], extra: dict) -> str:
    """sha256 over everything that determines the scan, including the exact token ids."""
    h = hashlib.sha256()
    head = {"v": SCAN_VERSION, "model": model_identity, "dtype": dtype, **extra}
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
    with FileLock(str(path) + ".lock"):
        load = lambda p: Scan.from_dict(torch.load(p, weights_only=True))  # noqa: E731
        scan = read_or_quarantine(path, load)
        if scan is not None:
            return scan, True
        scan = compute()
        buf = io.BytesIO()
        torch.save(scan.to_dict(), buf)
        atomic.write_bytes(path, buf.getvalue())
        return scan, False
