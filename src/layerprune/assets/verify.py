"""Assets checked by content: the manifest records every built file's SHA256, size and mtime.

``layerprune-assets --verify`` hashes every file and names any that differs (and how to
rebuild). A job checks the files it loads cheaply: size and mtime against the manifest; a file
whose size or mtime changed is hashed, and the job's identity of the asset (the key of every
cache: scans, searches, request caches) is built from the hashes of the files *as they are*,
so altered weights or texts never answer from another model's caches. A changed file is
reported in one warning line.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from layerprune.errors import LayerpruneError

MANIFEST = "asset.json"
log = logging.getLogger("layerprune")
_warned: set[str] = set()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_records(folder: Path) -> dict[str, dict]:
    """``{relative path: {sha256, size, mtime_ns}}`` of every file under ``folder`` (not the
    manifest, not hidden files): what the build records."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if (
            path.is_file()
            and rel != MANIFEST
            and not any(p.startswith(".") for p in path.parts[len(folder.parts) :])
        ):
            st = path.stat()
            out[rel] = {"sha256": sha256(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return out


def changed_files(folder: Path, manifest: dict, full: bool = False) -> dict[str, str]:
    """``{file: what is wrong}`` for the recorded files that are missing or differ. Cheap
    (size + mtime) unless ``full``; a file whose size or mtime changed is hashed, and only a
    different hash counts as changed."""
    out = {}
    for rel, rec in manifest.get("files", {}).items():
        path = folder / rel
        if not path.exists():
            out[rel] = "missing"
            continue
        st = path.stat()
        if not full and st.st_size == rec["size"] and st.st_mtime_ns == rec["mtime_ns"]:
            continue
        digest = sha256(path)
        if digest != rec["sha256"]:
            out[rel] = f"sha256 {digest[:12]}..., built {rec['sha256'][:12]}..."
    return out


def content_identity(name: str, folder: Path) -> str:
    """The asset as it is: a hash of its package pins and of its files' SHA256 (recorded, or
    computed now for a file that changed); a manifest from before file hashes were recorded
    falls back to the manifest itself (without its build time)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise LayerpruneError(
            f"{folder / MANIFEST} is unreadable ({e}); rebuild with "
            f"`layerprune-assets --rebuild {name}`"
        ) from e
    if "files" not in manifest:
        manifest.pop("built_s", None)
        return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
    changed = changed_files(folder, manifest)
    hashes = {rel: rec["sha256"] for rel, rec in manifest["files"].items()}
    for rel, why in changed.items():
        hashes[rel] = "missing" if why == "missing" else sha256(folder / rel)
        key = f"{folder}/{rel}:{hashes[rel]}"
        if key not in _warned:
            _warned.add(key)
            log.warning(
                "asset %s: %s differs from what was built (%s); caches are keyed by the file "
                "as it is. `layerprune-assets --verify` checks all; `layerprune-assets "
                "--rebuild %s` restores it",
                name,
                folder / rel,
                why,
                name,
            )
    described = {"packages": manifest.get("packages"), "files": hashes}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]
