"""Library versions and the git commit, recorded in every result for reproducibility."""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = ("layerprune", "torch", "transformers", "lm_eval", "peft", "bitsandbytes", "hydra-core")


def versions() -> dict[str, str]:
    """``{package: version}`` plus python and the git commit of this checkout (if any)."""
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    try:
        out["git_commit"] = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=Path(__file__).parent,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = "unknown"
    return out
