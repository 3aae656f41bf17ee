"""``layerprune [overrides]``: a thin ``@hydra.main`` around ``pipeline.run``.

Bad input ends in one ``error: ...`` line and exit code 2, before anything is loaded or a run
folder is made: a single run is composed and validated once up front (``precheck``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from layerprune.config import register, validate
from layerprune.errors import LayerpruneError

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
log = logging.getLogger("layerprune")

register()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _main(cfg: DictConfig) -> float | None:
    try:
        checked = validate(cfg)
        from layerprune import pipeline

        out_dir = Path(HydraConfig.get().runtime.output_dir)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        results = pipeline.run(checked, resolved, out_dir)
    except LayerpruneError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    log.info("results: %s", out_dir / "results.json")
    for key, value in results["metrics"].items():
        print(f"{key} = {value:.4f}" if isinstance(value, float) else f"{key} = {value}")
    return None


def one_line(error: Exception) -> str:
    """Hydra/OmegaConf messages span lines (and list the search path): keep what names the
    problem, on one line."""
    keep: list[str] = []
    chain = [error] + ([error.__cause__] if error.__cause__ else [])
    for line in "\n".join(map(str, chain)).splitlines():
        line = line.strip()
        if line.startswith("Config search path"):
            break
        if not line or line.startswith(("object_type=", "reference_type=", "To append")):
            continue
        if keep and keep[-1].endswith(":") and "options" in keep[-1]:
            keep[-1] += " " + line  # "Available options in 'model': a"
        elif keep and "options in" in keep[-1]:
            keep[-1] += ", " + line
        else:
            keep.append(line.rstrip("."))
    return "; ".join(keep)


def precheck(argv: list[str]) -> str | None:
    """Compose and validate a single run's overrides; return an error message or None.

    Multiruns (sweep syntax) and Hydra's own flags (--cfg, --help, ...) are left to Hydra.
    """
    if any(a.startswith("-") for a in argv):
        return None
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("config", overrides=argv)
        validate(cfg)
    except LayerpruneError as e:
        return str(e)
    except Exception as e:  # Hydra's composition errors: unknown option, bad type, typo
        return one_line(e)
    return None


def main() -> None:
    """Console-script entry point."""
    error = precheck(sys.argv[1:])
    if error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    _main()


if __name__ == "__main__":
    main()
