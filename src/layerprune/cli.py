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
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from layerprune import atomic
from layerprune.config import register, validate
from layerprune.errors import LayerpruneError

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
log = logging.getLogger("layerprune")

register()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        checked = validate(cfg)
        run_job(checked, OmegaConf.to_container(cfg, resolve=True), out_dir, multirun)
    except LayerpruneError as e:
        if not multirun:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        # in a sweep one bad job must not stop the others: record it and go on
        log.error("job failed: %s", e)
        atomic.write_text(out_dir / "error.txt", f"{e}\n")


def run_job(cfg, resolved: dict, out_dir: Path, multirun: bool) -> dict:
    """Skip a stored job (its stored results are copied here), else run, store and track it."""
    from layerprune import pipeline
    from layerprune.store import RunStore, job_key
    from layerprune.tracking import tracker

    store = RunStore(Path(cfg.store_dir))
    key = job_key(resolved)
    results = store.get(key)
    if results is not None and not cfg.force:
        log.info("skipped: already stored at %s (force=true reruns it)", store.path(key))
        atomic.write_json(out_dir / "results.json", results)
    else:
        t = cfg.tracking
        group = t.group or (out_dir.parent.name if multirun else None)
        with tracker(t.name, t.project, t.mode, group, out_dir.name, resolved, Path(t.dir)) as tr:
            results = pipeline.run(cfg, resolved, out_dir)
            tr.log_results(results, out_dir)
        store.put(key, results)
        log.info("results: %s (stored as %s)", out_dir / "results.json", key)
    for name, value in results["metrics"].items():
        print(f"{name} = {value:.4f}" if isinstance(value, float) else f"{name} = {value}")
    return results


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
