"""One look for every figure: a colour per method (the same in every figure of the project),
a line style per healing, the models in one order, captions that say what a band is."""

from __future__ import annotations

from pathlib import Path

CONF = Path(__file__).resolve().parents[3] / "conf"
# the methods layerprune ships, in a fixed order: their colours never change between figures
METHODS = sorted(p.stem for p in (CONF / "pruning_method").glob("*.yaml"))
PALETTE = [
    "#4C72B0",
    "#DD8452",
    "#55A868",
    "#C44E52",
    "#8172B3",
    "#937860",
    "#DA8BC3",
    "#8C8C8C",
    "#CCB974",
    "#64B5CD",
]
HEALING_STYLES = {"none": "-", "lora": "--", "kd": ":", "qlora": "-.", "partial": (0, (5, 1))}
MODEL_ORDER = ["smollm2-135m", "gemma3-270m", "qwen2.5-0.5b"]
BAND = "bands: +-1 standard error (lm-eval's, per task; the mean's from the tasks' as independent)"


def color(method: str) -> str:
    """The method's colour in every figure (methods from outside ``conf/`` come after)."""
    i = METHODS.index(method) if method in METHODS else len(METHODS) + sum(map(ord, method)) % 3
    return PALETTE[i % len(PALETTE)]


def line(variant: str) -> dict:
    """Matplotlib keywords of a variant "method[ + healing]": colour by method, style by
    healing."""
    method, _, healing = variant.partition(" + ")
    return {
        "color": color(method.strip()),
        "ls": HEALING_STYLES.get(healing.strip() or "none", "--"),
    }


def model_order(models) -> list[str]:
    """Known models in the papers' size order, the rest after, by name."""
    models = list(dict.fromkeys(models))
    return [m for m in MODEL_ORDER if m in models] + sorted(
        m for m in models if m not in MODEL_ORDER
    )


def model_title(name: str, stored: str = "") -> str:
    """What a model is, for a figure's title: the title a job stored, else its
    ``conf/model/<name>.yaml`` title (jobs run before titles existed, or upgraded from v1 with
    the bare name as title), else the name."""
    if stored and stored != name:
        return stored
    path = CONF / "model" / f"{name}.yaml"
    if path.exists():
        from omegaconf import OmegaConf

        return str(OmegaConf.load(path).get("title") or name)
    return name
