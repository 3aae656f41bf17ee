"""Damaged files never break a job or fool it: a cache or store entry that cannot be read is
moved aside (``<name>.corrupt-<time>``, kept for a look), one warning line names it, and the
caller recomputes. Writes elsewhere stay atomic (``atomic.py``), so damage comes from outside:
a disk error, a killed copy, a hand edit."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

log = logging.getLogger("layerprune")
T = TypeVar("T")


def quarantine(path: Path, reason: object) -> Path:
    """Move ``path`` aside and say so in one line; returns where it went."""
    path = Path(path)
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.replace(path, aside)
    first = str(reason).splitlines()[0] if str(reason) else type(reason).__name__
    log.warning("damaged %s (%s): moved to %s; recomputing", path, first[:200], aside.name)
    return aside


def read_or_quarantine(path: Path, read: Callable[[Path], T]) -> T | None:
    """``read(path)``; None if the file is missing, or damaged (then moved aside)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return read(path)
    except Exception as e:  # any failure to read or check it: the entry is unusable
        quarantine(path, e)
        return None
