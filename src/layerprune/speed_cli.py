"""``layerprune-speed RUN...``: the speed stage for stored jobs, without rerunning them.

Each job's pruned model is rebuilt from its stored plan (the base model as its config names
it, then the surgery the plan decides) and measured against the unpruned model in this process
(``speed.py``); the ``speed`` block is written into its ``results.json``. Jobs of one model
share one loaded unpruned model; jobs with the same plan (a healed and an unhealed job remove
the same blocks) are measured once. Healing does not change the structure, so a healed job's
speed is its pruned structure's.

    layerprune-speed experiments/cross_family/runs --speed default speed.new_tokens=64
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from omegaconf import OmegaConf

from layerprune.config import ModelConfig, SpeedConfig
from layerprune.plan import PruningPlan
from layerprune.results import Results

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
log = logging.getLogger("layerprune.speed")


def speed_settings(name: str, overrides: list[str]) -> SpeedConfig:
    """``conf/speed/<name>.yaml`` with ``speed.KEY=VALUE`` overrides, typed."""
    node = OmegaConf.merge(
        OmegaConf.structured(SpeedConfig),
        OmegaConf.load(CONF_DIR / "speed" / f"{name}.yaml"),
        OmegaConf.from_dotlist([o.removeprefix("speed.") for o in overrides]),
    )
    return OmegaConf.to_object(node)


def measure_runs(paths: list[Path], settings: SpeedConfig) -> int:
    """Write the speed block of every pruned job in ``paths``; returns how many."""
    from layerprune.models.load import load_model
    from layerprune.speed import speed_report
    from layerprune.surgery.apply import apply_plan

    runs = [(Results.load(f), f) for f in paths]
    done, by_model = 0, {}
    for r, f in runs:
        if r.removed == 0:
            continue
        by_model.setdefault(json.dumps(r.config["model"], sort_keys=True), []).append((r, f))
    for model_json, jobs in by_model.items():
        cfg = OmegaConf.to_object(
            OmegaConf.merge(OmegaConf.structured(ModelConfig), json.loads(model_json))
        )
        unpruned = load_model(cfg)
        measured: dict[str, dict] = {}
        for r, f in jobs:
            plan = PruningPlan(**r.plan)
            key = json.dumps([plan.removed_blocks, plan.removed_attention, plan.removed_mlp])
            if key not in measured:
                pruned = load_model(cfg)
                apply_plan(pruned.model, pruned.adapter, plan)
                adapters = (pruned.adapter, unpruned.adapter)
                measured[key] = speed_report(pruned.model, unpruned.model, settings, adapters)
                log.info("%s: %s", f, measured[key]["ratios"])
                del pruned
            r.speed = measured[key]
            r.write(f)
            done += 1
    return done


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    p = argparse.ArgumentParser(prog="layerprune-speed", description=__doc__.split("\n")[0])
    p.add_argument(
        "args", nargs="+", help="results.json files or folders of them; speed.KEY=VALUE settings"
    )
    p.add_argument("--speed", default="default", help="a conf/speed option (default, structure)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = [a for a in args.args if "=" in a]
    roots = [Path(a) for a in args.args if "=" not in a]
    files = [f for x in roots for f in ([x] if x.is_file() else sorted(x.rglob("results.json")))]
    settings = speed_settings(args.speed, overrides)
    print(f"measured {measure_runs(files, settings)} pruned jobs of {len(files)}")


if __name__ == "__main__":
    main()
