"""lm-eval's request cache (``simple_evaluate(use_cache=...)``), one database per model.

lm-eval keys a cached answer by the request alone (``["loglikelihood", context,
continuation]``): nothing about the model. So each model gets its own database, named by a hash
of what the model *is*: the base weights' identity, dtype, device kind, quantisation, the
blocks / attention / MLP removed (0-based original indices) and the healing settings, plus the
scorer (stock and shared are kept apart) and ``max_length`` (it decides truncation). Two jobs
that evaluate the same model (the fraction-0 point of every method, two methods that remove the
same blocks, a rerun, a larger ``limit``) score each request once. A file lock keeps parallel
sweep jobs from writing one database at once (SQLite would refuse: "database is locked").
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from layerprune import atomic, paths

CACHE_VERSION = 2  # bump when scoring changes what a request's answer is (2: aligned options)


def cache_prefix(identity: dict[str, Any], scoring: str, max_length: int) -> Path:
    """The ``use_cache`` prefix of this model's database (lm-eval appends ``_rank0.db``);
    ``identity.json`` beside it says which model it belongs to."""
    described = {
        "model": identity,
        "scoring": scoring,
        "max_length": max_length,
        "version": CACHE_VERSION,
    }
    text = json.dumps(described, sort_keys=True, default=str)
    folder = paths.eval_cache_dir() / hashlib.sha256(text.encode()).hexdigest()[:20]
    if not (folder / "identity.json").exists():
        atomic.write_text(folder / "identity.json", json.dumps(described, indent=2, default=str))
    return folder / "requests"
