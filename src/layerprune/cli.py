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
from layerprune.preflight import check_writable, preflight
from layerprune.results import Results
from layerprune.tracking import Tracker

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
        if multirun:  # parallel jobs (joblib) one per GPU: job k on cuda:(k mod #GPUs)
            from layerprune.models.load import pinned_device

            checked.model.device = pinned_device(checked.model.device, hydra_cfg.job.num)
        preflight(checked, out_dir)  # tasks, fraction, model files, writable folders: no load yet
        resolved = OmegaConf.to_container(cfg, resolve=True)
        run_job(checked, resolved, out_dir, multirun, list(hydra_cfg.overrides.task))
    except LayerpruneError as e:
        if not multirun:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        # in a sweep one bad job must not stop the others: record it and go on
        log.error("job failed: %s", e)
        atomic.write_text(out_dir / "error.txt", f"{e}\n")


def run_job(
    cfg, resolved: dict, out_dir: Path, multirun: bool, overrides: list[str] | None = None
) -> Results:
    """Skip a stored job (its stored results and figures are copied here), else run, store and
    track it. A single run given its ``overrides`` also prints each metric beside the unpruned
    model's on the same items (that job is run once, then read from the store)."""
    from layerprune.store import RunStore, job_key

    store = RunStore(Path(cfg.store_dir))
    key = job_key(resolved)
    results = None if cfg.force else store.restore(key, out_dir)
    if results is not None:
        log.info("skipped: already stored at %s (force=true reruns it)", store.path(key))
    else:
        results = _run_and_store(cfg, resolved, out_dir, multirun)
    unpruned = None
    if overrides is not None and not multirun and not results.is_unpruned:
        unpruned = _unpruned_results(overrides, store, out_dir / "unpruned", cfg.force)
    print_metrics(results.metrics, unpruned.metrics if unpruned else None)
    if results.speed and results.speed.get("ratios"):
        from layerprune.speed import summary

        print(f"speed ({results.speed['device']}): {summary(results.speed)}")
    return results


def _run_and_store(cfg, resolved: dict, out_dir: Path, multirun: bool) -> Results:
    """Run the job (tracked) and put it into the run store."""
    from layerprune import pipeline
    from layerprune.store import RunStore, job_key

    store, key = RunStore(Path(cfg.store_dir)), job_key(resolved)
    group = out_dir.parent.name if multirun else None
    with cfg.tracking.run(out_dir.name, group, resolved) as track:
        results = pipeline.run(cfg, resolved, out_dir)
        track(results, out_dir)
    store.put(key, results, out_dir)
    log.info("results: %s (stored as %s)", out_dir / "results.json", key)
    return results


# overrides that say what is pruned or healed: the unpruned comparison drops them
_PRUNING_KEYS = (
    "pruning_method",
    "fraction",
    "healing",
    "metric",
    "combo",
    "force",
    "save_checkpoint",
    "speed",
)


def _unpruned_results(overrides: list[str], store, out_dir: Path, force: bool) -> Results:
    """The unpruned, unhealed model on the same benchmark items: from the store, or run once
    (again with ``force``); never saved as a checkpoint."""
    from hydra import compose

    from layerprune.store import job_key

    keep = [o for o in overrides if o.lstrip("+~").split("=")[0].split(".")[0] not in _PRUNING_KEYS]
    fixed = ["pruning_method=none", "fraction=0", "healing=none", "speed=none"]
    cfg = compose("config", overrides=[*keep, *fixed])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra", None)
    key = job_key(resolved)
    results = None if force else store.restore(key, out_dir)
    if results is None:
        log.info("the unpruned model on the same items (once; then from the store)")
        checked = validate(cfg)
        checked.tracking = Tracker()  # a reference for this run's printout, not a tracked job
        results = _run_and_store(checked, resolved, out_dir, False)
    return results


def print_metrics(metrics: dict, unpruned: dict | None = None) -> None:
    """Each metric; with ``unpruned``, beside the unpruned model's value and the retention
    (value / unpruned: the share of the unpruned accuracy kept; for losses, the factor)."""
    for name, value in metrics.items():
        if not isinstance(value, float):
            print(f"{name} = {value}")
            continue
        base = unpruned.get(name) if unpruned else None
        main = not name.endswith(("_stderr", "/n", "/chance"))
        if base is None or not main:
            print(f"{name} = {value:.4f}")
        elif not base:
            print(f"{name} = {value:.4f}   unpruned {base:.4f}   retention -")
        elif name.endswith(("/loss", "/ppl", "/word_ppl")):
            print(f"{name} = {value:.4f}   unpruned {base:.4f}   x{value / base:.3f}")
        else:
            print(f"{name} = {value:.4f}   unpruned {base:.4f}   retention {value / base:.1%}")


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
        # the folders first: a read-only store fails before the heavier imports of validate
        check_writable(Path(str(cfg.store_dir)), "store_dir")
        preflight(validate(cfg))
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
