"""``layerprune-memory [overrides...] [device=NAME] [gpus=N]``: each stage's predicted peak for
the job ``layerprune [overrides...]`` would run, whether it fits, and what would make it fit.

    layerprune-memory model=llama-2-7b healing=qlora_gromov experiment=gromov_mmlu device=a100-80gb
    layerprune-memory model=llama-2-70b device=a100-80gb gpus=8
    layerprune-memory --readme          # the README's table (7B-70B x one / eight A100-80GB)
    layerprune-memory --readme model=llama-2-70b   # its rows for one model

``device`` is a named device (``devices.NAMED``; default: this machine's CPU RAM, or its GPUs),
``gpus`` how many (the model is split over them when ``model.device_map`` is set; with
``gpus`` > 1 it is set to ``auto``). Nothing is loaded: the model is built on the meta device.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator

from layerprune.errors import LayerpruneError

README_MODELS = ["llama-2-7b", "llama-3-8b", "llama-2-13b", "llama-2-70b"]
RECIPES = {
    "default": [],
    "paper": ["experiment=gromov_mmlu", "healing=qlora_gromov"],
}
STAGES = ["load", "scan", "search", "heal", "evaluate", "speed"]


def compose(overrides: list[str]):
    """The validated config ``layerprune <overrides>`` would run (cli.py's composition)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from layerprune.cli import CONF_DIR
    from layerprune.config import validate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return validate(hydra_compose("config", overrides=overrides))


def split_args(argv: list[str]) -> tuple[list[str], str | None, int]:
    """``(hydra overrides, device name, gpus)`` from the command line."""
    overrides, device, gpus = [], None, 1
    for a in argv:
        if a.startswith("device="):
            device = a.split("=", 1)[1]
        elif a.startswith("gpus="):
            gpus = int(a.split("=", 1)[1])
        else:
            overrides.append(a)
    return overrides, device, gpus


def local_device(cfg) -> object:
    """This machine's device for ``cfg``: its GPUs (all when split), else its available RAM."""
    import torch

    from layerprune.memory import devices

    if torch.cuda.is_available() and cfg.model.device != "cpu":
        n = torch.cuda.device_count() if cfg.model.device_map else 1
        return devices.local_cuda(list(range(n)))
    return devices.local_cpu()


def gb(n: int) -> str:
    return f"{n / 1e9:.1f}"


def report(cfg, device) -> str:
    """The per-stage table for one job on ``device``."""
    from layerprune.memory.advice import advise

    lines = [
        f"{cfg.model.name} ({'nf4' if cfg.model.load_in_4bit else 'weights as loaded'}), "
        f"on {device.describe()}; GB = 1e9 bytes",
        f"{'stage':9s} {'peak GB':>8s} {'per GPU':>8s}  fits  what fits / parts",
    ]
    for v in advise(cfg, device):
        p = v.peak
        parts = ", ".join(f"{k} {gb(b)}" for k, b in p.parts.items() if b >= 5e7)
        what = v.fix if not v.fits else parts
        per = gb(p.per_device) if device.count > 1 else ""
        lines.append(
            f"{p.stage:9s} {gb(p.bytes):>8s} {per:>8s}  {'yes ' if v.fits else 'NO  '}  {what}"
        )
    return "\n".join(lines)


def readme_rows(models: list[str] = README_MODELS, device_name: str = "a100-80gb") -> Iterator[str]:
    """The README table, row by row: per model, recipe (the default job / the paper's QLoRA
    recipe with 256 x 1024 calibration) and weights (bf16 / nf4), each stage's peak in GB on
    one GPU / per GPU over eight (``model.device_map=auto``); ``!`` marks a peak that does not
    fit one ``device_name``. The search column is FinerCut's (``calibration=wiki``: 10 x 256)."""
    from layerprune.memory import devices
    from layerprune.memory.predict import Predictor, Target, predict

    usable, eight = devices.named(device_name).usable, Target("cuda", 8)
    yield "| model | recipe | weights | " + " | ".join(STAGES) + " |"
    yield "|" + "---|" * (3 + len(STAGES))
    for model in models:
        for recipe, extra in RECIPES.items():
            for weights in ("bf16", "nf4"):
                quant = ["model.load_in_4bit=true"] if weights == "nf4" else []
                split = [f"model={model}", *quant, "model.device_map=auto"]
                peaks = {p.stage: p for p in predict(compose([*split, *extra]), eight)}
                finercut = compose([*split, "pruning_method=finercut", "calibration=wiki"])
                peaks["search"] = Predictor(finercut, eight).stage("search")
                cells = []
                for stage in STAGES:
                    p = peaks.get(stage)
                    if p is None:
                        cells.append("-")
                        continue
                    one, per = p.bytes, p.on(8)
                    cells.append(
                        f"{gb(one)}{'' if one <= usable else '!'} / "
                        f"{gb(per)}{'' if per <= usable else '!'}"
                    )
                yield f"| {model} | {recipe} | {weights} | " + " | ".join(cells) + " |"


def main() -> None:
    """Console-script entry point."""
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)  # libraries' deprecations
    argv = sys.argv[1:]
    try:
        if "--readme" in argv:
            models = [a.split("=", 1)[1] for a in argv if a.startswith("model=")]
            for row in readme_rows(models or README_MODELS):
                print(row, flush=True)
            return
        if argv and argv[0] in ("-h", "--help"):
            print(__doc__)
            return
        overrides, name, gpus = split_args(argv)
        if gpus > 1 and not any(o.startswith("model.device_map") for o in overrides):
            overrides.append("model.device_map=auto")
        cfg = compose(overrides)
        from layerprune.memory import devices

        device = devices.named(name, gpus) if name else local_device(cfg)
        print(report(cfg, device))
    except LayerpruneError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
