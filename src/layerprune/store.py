"""The run store: every finished job's results, keyed by the hash of its resolved config.

``outputs/runs/<key>/results.json``. A job whose key is stored is skipped (unless
``force=true``), so a sweep killed at any point and relaunched runs only what is missing.
Writes are atomic; two jobs with one key may both compute, and the last rename wins with an
identical file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from layerprune.errors import LayerpruneError
from layerprune.integrity import quarantine
from layerprune.results import Results, ResultsVersionError

log = logging.getLogger("layerprune")

# keys that change where or how a job is reported, not what it computes
NOT_IN_KEY = ("hydra", "force", "store_dir", "tracking", "memory_check")
FIGURES = ("*.png", "*.pdf")  # a job folder's figures, kept beside its results


# settings added after run-store keys were in use, at the value with which a job computes
# what it computed before they existed: left out of the key at that value, so the keys made
# before still name the same jobs ("*": every element of a list). The healer's own such
# settings are ``heal.base.keyed``'s (its request-cache and resume keys use them too).
ADDED_AT = {
    "calibration.allow_fewer": False,
    "calibration.hub": None,
    "benchmark.perplexity.*.hub": None,
}


def job_key(resolved: dict[str, Any]) -> str:
    """sha256 of the resolved job config, without ``NOT_IN_KEY``, the ``ADDED_AT`` settings at
    those values, nor the healing settings that cannot change the healed model."""
    from layerprune.heal.base import keyed

    job = {k: v for k, v in resolved.items() if k not in NOT_IN_KEY}
    if isinstance(job.get("healing"), dict):
        job["healing"] = keyed(job["healing"])
    for path, value in ADDED_AT.items():
        job = _without(job, path.split("."), value)
    return hashlib.sha256(json.dumps(job, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _without(node: Any, path: list[str], value: Any) -> Any:
    """``node`` without the key at ``path`` where it holds ``value``."""
    head, rest = path[0], path[1:]
    if head == "*" and isinstance(node, list):
        return [_without(x, rest, value) for x in node]
    if not isinstance(node, dict) or head not in node:
        return node
    if not rest:
        return {k: v for k, v in node.items() if not (k == head and v == value)}
    return {**node, head: _without(node[head], rest, value)}


class RunStore:
    """A folder of ``<key>/results.json``."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key / "results.json"

    def get(self, key: str) -> Results | None:
        """The stored results, or None: also when the file is damaged (moved aside, one
        warning) or of another schema version (the job runs again and replaces it)."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            return Results.load(path)
        except ResultsVersionError as e:
            log.warning("%s: running the job again", e)
            return None
        except LayerpruneError as e:
            quarantine(path, e)
            return None

    def put(self, key: str, results: Results, job_dir: Path | None = None) -> Path:
        """Store atomically, with the figures of ``job_dir``; returns the path."""
        if job_dir is not None:
            for figure in sorted(f for g in FIGURES for f in Path(job_dir).glob(g)):
                tmp = self.root / key / f".{figure.name}.tmp"
                tmp.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(figure, tmp)
                tmp.replace(self.root / key / figure.name)
        results.write(self.path(key))
        return self.path(key)

    def restore(self, key: str, job_dir: Path) -> Results | None:
        """A stored job's results and figures copied into ``job_dir``; None if not stored."""
        results = self.get(key)
        if results is not None:
            job_dir.mkdir(parents=True, exist_ok=True)
            for figure in sorted(f for g in FIGURES for f in (self.root / key).glob(g)):
                shutil.copyfile(figure, job_dir / figure.name)
            results.write(job_dir / "results.json")
        return results

    def all(self) -> list[Path]:
        """Every stored results.json."""
        return sorted(self.root.glob("*/results.json"))
