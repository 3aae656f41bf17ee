"""Atomic file and folder writes: a reader sees the old state or the new one, never half of one.

Everything that other jobs may read concurrently (asset cache, scan cache, results) is written
through here: write to a temporary sibling, then ``os.replace``/``rename`` it into place.

``cache_lock`` is the one lock every cache takes while it computes an entry (scan, search,
teacher top-k, request cache): an flock where the filesystem has it, else (some network and
cluster filesystems, or ``LAYERPRUNE_LOCK=soft``) a lock file made with ``O_EXCL``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import BaseFileLock, FileLock, SoftFileLock

from layerprune.errors import LayerpruneError

LOCK_KINDS = ("auto", "flock", "soft")


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically, pretty-printed, keys in insertion order."""
    write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


@contextlib.contextmanager
def directory(final: Path) -> Iterator[Path]:
    """Yield a temporary folder next to ``final``; on success it is renamed to ``final``.

    If the body raises, the temporary folder is removed and ``final`` is untouched, so an
    interrupted conversion is never mistaken for a finished one. If another process finished
    the same folder first, its copy is kept and ours is discarded.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a cache shared on a cluster must stay readable
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cache_lock(path: Path | str) -> BaseFileLock:
    """The lock of a cache entry: ``<path>.lock``, of the kind ``lock_kind`` picks."""
    lock = f"{path}.lock"
    soft = lock_kind(Path(lock).parent) == "soft"
    return SoftFileLock(lock) if soft else FileLock(lock)


def lock_kind(folder: Path) -> str:
    """``flock`` or ``soft``: ``$LAYERPRUNE_LOCK`` when set to one of them, else ``flock``
    where ``folder``'s filesystem supports it (probed once per folder)."""
    wanted = os.environ.get("LAYERPRUNE_LOCK", "auto")
    if wanted not in LOCK_KINDS:
        raise LayerpruneError(f"LAYERPRUNE_LOCK={wanted!r}: expected one of {LOCK_KINDS}")
    if wanted != "auto":
        return wanted
    return "flock" if _flock_works(str(Path(folder).absolute())) else "soft"


@functools.cache
def _flock_works(folder: str) -> bool:
    """Whether an exclusive flock can be taken on a file in ``folder``."""
    try:
        import fcntl
    except ImportError:  # Windows: filelock's FileLock uses its own (working) locks
        return True
    Path(folder).mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".flock-probe.", dir=folder)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except OSError:  # ENOLCK, EOPNOTSUPP, ENOSYS ...: no flock here
        return False
    finally:
        os.close(fd)
        os.unlink(probe)
