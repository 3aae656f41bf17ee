"""``results.json``: one job's results as a typed, versioned schema.

Written by the pipeline (``Results.from_job``), read back by the run store, the report and
tracking through the same type (``Results.load``). A file of another schema version is refused
with an error that names its version and the command that upgrades it:

    python -m layerprune.results upgrade PATH...

Version 1 (before Dec 2026) had no ``schema_version`` key; version 2 adds it, the method's
``family`` in the plan, ``model`` (what the model is), per-item results (``items``) and
``speed``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerprune import atomic
from layerprune.errors import LayerpruneError

if TYPE_CHECKING:
    from layerprune.job import JobState

SCHEMA_VERSION = 2


class ResultsVersionError(LayerpruneError):
    """A results file of another schema version (readable, but not by this layerprune)."""


@dataclass
class Results:
    """One job (module doc). ``plan`` is ``PruningPlan.to_dict()`` (0-based original indices)."""

    config: dict[str, Any]  # the resolved job config
    fraction: float
    plan: dict[str, Any]
    params: dict[str, int]  # before, after (parameters held; tied embeddings once)
    metrics: dict[str, float]  # "<task>/<metric>" (+ _stderr, /n, /chance)
    timings: dict[str, float]  # "<stage>_s"
    model: dict[str, Any] = field(default_factory=dict)  # name, title, identity
    eval_cache: dict[str, int] = field(default_factory=dict)  # hits, misses
    checkpoint: str | None = None
    healing: dict[str, Any] | None = None
    scan_cache: str | None = None
    items: dict[str, dict[str, list]] = field(default_factory=dict)  # per task: item columns
    speed: dict[str, Any] | None = None  # pruned vs unpruned, measured in one process
    versions: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    schema_version: int = SCHEMA_VERSION

    # -- reading / writing -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: Path) -> None:
        """Atomically (a reader never sees half a file)."""
        atomic.write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "results") -> Results:
        """Check the version and the keys; raise ``LayerpruneError`` naming what is wrong."""
        version = data.get("schema_version", 1) if isinstance(data, dict) else None
        if version != SCHEMA_VERSION:
            raise ResultsVersionError(
                f"{source} has results schema version {version}; this layerprune reads "
                f"version {SCHEMA_VERSION}: upgrade it with "
                f"`python -m layerprune.results upgrade {source}`"
            )
        known = {f.name for f in fields(cls)}
        required = [f.name for f in fields(cls) if f.default is f.default_factory is MISSING]
        missing = [k for k in required if k not in data]
        if missing:
            raise LayerpruneError(f"{source} lacks results keys {missing}")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def load(cls, path: Path) -> Results:
        """``path`` read and checked (``from_dict``)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise LayerpruneError(f"{path} is not a readable results file: {e}") from e
        if not isinstance(data, dict):
            raise LayerpruneError(f"{path} is not a results file (a JSON {type(data).__name__})")
        try:
            return cls.from_dict(data, str(path))
        except TypeError as e:  # a key of the wrong shape
            raise LayerpruneError(f"{path}: {e}") from e

    # -- from a finished job ----------------------------------------------------------

    @classmethod
    def from_job(cls, job: JobState, config: dict[str, Any], model: dict[str, Any]) -> Results:
        """The results of a finished ``job`` (``config``: its resolved config)."""
        from layerprune.versions import versions

        return cls(
            config=config,
            fraction=job.fraction,
            plan=job.plan.to_dict(),
            params={"before": job.params_before, "after": job.params_after},
            metrics=job.metrics,
            timings=job.timings,
            model={**model, "identity": job.lm.identity},
            eval_cache=job.eval_cache,
            checkpoint=str(job.checkpoint) if job.checkpoint else None,
            healing=job.healing,
            scan_cache=job.caches.get("scan"),
            items=job.items,
            speed=job.speed,
            versions=versions(),
            seed=job.seed,
        )

    # -- what reports ask ----------------------------------------------------------------

    @property
    def removed(self) -> int:
        """Blocks + attention + MLP sublayers removed."""
        p = self.plan
        return len(p["removed_blocks"]) + len(p["removed_attention"]) + len(p["removed_mlp"])

    @property
    def is_unpruned(self) -> bool:
        """Nothing removed and not healed: the reference every pruned job is compared with."""
        return self.removed == 0 and not self.healing


def upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 results dict in version 2: ``schema_version``, the plan's ``family`` (from
    the method class its config names), ``model`` (from the config and ``model_identity``);
    ``items`` and ``speed`` stay empty (a v1 job did not record them)."""
    if data.get("schema_version", 1) != 1:
        return data
    out = dict(data)
    identity = out.pop("model_identity", None)
    cfg = out.get("config", {})
    out["plan"] = {**out["plan"], "family": _family(cfg.get("pruning_method", {}), out["plan"])}
    name = cfg.get("model", {}).get("name")
    out["model"] = {
        "name": name,
        "title": cfg.get("model", {}).get("title", name),
        "identity": identity,
    }
    out.setdefault("items", {})
    out.setdefault("speed", None)
    out["schema_version"] = SCHEMA_VERSION
    return out


def _family(node: dict, plan: dict) -> str:
    """The family a v1 plan's method declares (its class), or, for a class that moved or is
    gone, what the plan shows: sublayer searches record their granularity."""
    import importlib

    module, _, name = str(node.get("_target_", "")).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name).family
    except (ImportError, AttributeError, ValueError):
        scores = plan.get("scores") or {}
        sublayer = (
            "granularity" in scores or plan.get("removed_attention") or plan.get("removed_mlp")
        )
        return "sublayer" if sublayer else "block"


def main(argv: list[str] | None = None) -> None:
    """``python -m layerprune.results upgrade PATH...``: rewrite results files as version 2."""
    p = argparse.ArgumentParser(prog="python -m layerprune.results")
    p.add_argument("command", choices=["upgrade"])
    p.add_argument("paths", nargs="+", type=Path, help="results.json files or folders of them")
    args = p.parse_args(argv)
    files = [
        f for x in args.paths for f in ([x] if x.is_file() else sorted(x.rglob("results.json")))
    ]
    done = 0
    for f in files:
        data = json.loads(f.read_text())
        if data.get("schema_version", 1) == 1:
            Results.from_dict(upgrade_v1(data), str(f)).write(f)
            done += 1
    print(f"upgraded {done} of {len(files)} results files to schema version {SCHEMA_VERSION}")


if __name__ == "__main__":
    main()
