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


def cache_prefix(identity: dict[str, Any], scorer: dict[str, Any], max_length: int) -> Path:
    """The ``use_cache`` prefix of this model's database (lm-eval appends ``_rank0.db``);
    ``identity.json`` beside it says which model it belongs to. ``scorer``: what of the scorer
    changes an answer (``{"scoring": "shared"}``, ``Scorer.key``)."""
    described = {
        "model": identity,
        **scorer,
        "max_length": max_length,
        "version": CACHE_VERSION,
    }
    text = json.dumps(described, sort_keys=True, default=str)
    folder = paths.eval_cache_dir() / hashlib.sha256(text.encode()).hexdigest()[:20]
    if not (folder / "identity.json").exists():
        atomic.write_text(folder / "identity.json", json.dumps(described, indent=2, default=str))
    return folder / "requests"


def check_database(prefix: Path) -> None:
    """Move aside a damaged database of ``prefix`` (lm-eval opens ``<prefix>_rank0.db``; a
    truncated or overwritten file would fail deep inside the evaluation, after scan and prune,
    and on every later run): SQLite's integrity check and a read of its table must pass."""
    import sqlite3

    from layerprune.integrity import quarantine

    db = Path(f"{prefix}_rank0.db")
    if not db.exists():
        return
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            ok = con.execute("PRAGMA integrity_check").fetchone()[0]
            tables = [
                r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            for table in tables:
                con.execute(f'SELECT count(*) FROM "{table}"').fetchone()
        if ok != "ok":
            raise sqlite3.DatabaseError(ok)
    except sqlite3.Error as e:
        quarantine(db, e)
