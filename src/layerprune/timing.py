"""Stage timings: the ``<stage>_s`` entries of results.json."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Record the wall time of the ``with`` body as ``timings[f"{stage}_s"]``."""
    start = time.perf_counter()
    yield
    timings[f"{stage}_s"] = round(time.perf_counter() - start, 3)
