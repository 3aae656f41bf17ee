"""Every option of every config group composes and validates; bad input names itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from layerprune.cli import precheck
from layerprune.config import Config, validate
from layerprune.errors import LayerpruneError
from tests.conftest import CONF_DIR, compose, have_asset, needs_assets

GROUPS = [
    "model",
    "calibration",
    "pruning_method",
    "metric",
    "healing",
    "benchmark",
    "scorer",
    "tracking",
]
OPTIONS = [
    (group, path.stem)
    for group in GROUPS + ["experiment", "combo"]
    for path in sorted((CONF_DIR / group).glob("*.yaml"))
]
# options that only make sense together with another choice
COMPANIONS = {
    ("metric", "block_influence"): ["pruning_method=shortgpt"],
    ("metric", "js"): ["pruning_method=finercut"],
    ("metric", "js_code"): ["pruning_method=finercut"],
    ("metric", "kl"): ["pruning_method=finercut"],
}
LAUNCHERS = sorted(p.stem for p in (CONF_DIR / "hydra" / "launcher").glob("*.yaml"))


def test_every_group_has_options():
    for group in GROUPS + ["experiment"]:
        assert any((CONF_DIR / group).glob("*.yaml")), f"conf/{group}/ is empty"


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_validates(group, option):
    cfg = compose([f"{group}={option}", *COMPANIONS.get((group, option), [])])
    checked = validate(cfg)
    assert isinstance(checked, Config)
    if group == "experiment":
        assert checked.experiment is not None
    elif group == "combo":
        assert checked.metric.name != "default"
    else:
        assert OmegaConf.select(cfg, f"{group}.name") or OmegaConf.select(cfg, group)


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_launchers_compose(launcher):
    cfg = compose([f"hydra/launcher={launcher}"], hydra=True)
    assert "_target_" in cfg.hydra.launcher


def test_default_is_offline_smollm2():
    cfg = validate(compose())
    assert cfg.model.name == "smollm2-135m" and cfg.model.source.value == "asset"
    assert cfg.fraction == 0.25 and cfg.pruning_method.name == "deeper_layers"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["pruning_method=nope"], "Could not find 'pruning_method/nope'"),
        (["fraction=abc"], "could not be converted to Float; full_key: fraction"),
        (["fraction=1.5"], "fraction=1.5 is out of range"),
        (["fraction=-0.1"], "out of range"),
        (["model.nmae=x"], "Key 'nmae' not in 'ModelConfig'"),
        (["model.dtype=fp8"], "expected one of [auto, float32, bfloat16, float16]"),
        (["calibration.seq_len=0"], "calibration.seq_len must be >= 1"),
        (["model=tiny-llama", "model.random.family=gpt2"], "model.random.family='gpt2'"),
    ],
)
def test_bad_input_one_line(overrides, expected):
    error = precheck(overrides)
    assert error is not None and expected in error
    assert "\n" not in error


def test_block_influence_needs_shortgpt():
    assert "use pruning_method=shortgpt" in precheck(["metric=block_influence"])


def test_good_input_passes_precheck():
    assert precheck(["model=tiny-qwen2", "fraction=0.25"]) is None


@pytest.mark.slow
def test_cli_bad_fraction_writes_nothing(tmp_path):
    """The console script exits 2 with one stderr line and makes no run folder."""
    proc = subprocess.run(
        [Path(sys.executable).parent / "layerprune", "fraction=1.5"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: fraction=1.5 is out of range: expected 0 <= f < 1"
    assert not (tmp_path / "outputs").exists()


def test_validate_raises_layerprune_error():
    cfg = compose(["model=tiny-llama"])
    cfg.fraction = 0.999
    validate(cfg)
    cfg.fraction = 1.0
    with pytest.raises(LayerpruneError, match="out of range"):
        validate(cfg)


@pytest.mark.slow
def test_task_and_fraction_errors_come_before_any_model_loads(monkeypatch):
    """Unknown lm-eval task, a task without offline data, a fraction removing every block:
    one line from the up-front check, and no model is loaded."""
    import layerprune.models.load as load

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(load, "load_model", no_load)
    misspelt = ["benchmark=arc_easy", "benchmark.data=hub", "benchmark.tasks.0.name=arc_eazy"]
    assert precheck(misspelt) == "unknown lm-eval task(s): arc_eazy (did you mean arc_easy?)"
    not_offline = precheck(["benchmark=arc_easy", "benchmark.tasks.0.name=nq_open"])
    assert not_offline.startswith("no offline data for task(s) ['nq_open']")
    everything = precheck(["model=tiny-llama", "pruning_method=last_layers", "fraction=0.95"])
    assert everything == "fraction=0.95 removes 8 of 8: at least one must remain"
    # FinerCut counts sublayers: 0.95 of 16 -> 15 is allowed, 0.99 -> 16 is not
    finercut = ["model=tiny-llama", "pruning_method=finercut", "metric=js"]
    assert precheck([*finercut, "fraction=0.95"]) is None
    assert "removes 16 of 16" in precheck([*finercut, "fraction=0.99"])
    if have_asset("smollm2-135m"):  # an asset's 30 blocks: from its config.json, no weights
        assert (
            precheck(["fraction=0.99"])
            == "fraction=0.99 removes 30 of 30: at least one must remain"
        )


@needs_assets("text")
def test_more_calibration_sequences_than_the_text_holds_stop_before_loading(monkeypatch):
    """The block scan asks one document per sequence: 1,000 of the 144 offline C4 documents
    is one line from the up-front check (nothing is loaded: the loader would fail), and
    ``calibration.allow_fewer=true`` lets the job run on what there is."""
    from layerprune.models import load

    monkeypatch.setattr(load, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    error = precheck(["model=tiny-llama", "calibration.num_sequences=1000"])
    assert error == (
        "calibration.num_sequences=1000 but c4/calibration holds 144 documents; "
        "lower calibration.num_sequences or set calibration.allow_fewer=true"
    )
    allowed = ["model=tiny-llama", "calibration.num_sequences=1000", "calibration.allow_fewer=true"]
    assert precheck(allowed) is None
    assert precheck(["model=tiny-llama", "calibration.num_sequences=1000", "fraction=0"]) is None
