"""The memory model (``layerprune.memory``) against measured peaks, the CLI and the preflight.

Measured = live tensor bytes (``measure.LiveBytes``: every storage from its allocation until
it is freed, weights read from files included), per stage of a real job run as
``pipeline.run`` runs it, with small settings; predicted = ``memory.predict`` from the config
alone. Each stage must agree within 15%.
"""

from __future__ import annotations

import pytest
import torch

from layerprune.config import validate
from layerprune.errors import LayerpruneError
from tests.conftest import compose, have_asset

TOLERANCE = 0.15

SMALL = [
    "calibration.num_sequences=4",
    "calibration.seq_len=32",
    "calibration.batch_size=2",
    "benchmark=quick",
    "benchmark.tasks=[]",
    "benchmark.perplexity=[{source: wiki, split: evaluation, context_length: 32, stride: 32,"
    " max_tokens: 128, batch_size: 2}]",
]
HEAL = ["healing.steps=2", "healing.batch_size=2", "healing.seq_len=32", "healing.warmup_steps=1"]
SPEED = [
    "speed=default",
    "speed.prefill_batches=[2]",
    "speed.prefill_length=16",
    "speed.decode_batches=[2]",
    "speed.prompt_length=4",
    "speed.new_tokens=2",
    "speed.min_run_time=0.001",
    "speed.rounds=1",
]


def _compare(overrides: list[str], tmp_path, monkeypatch) -> dict[str, tuple[int, int]]:
    """``{stage: (predicted, measured)}`` for the job ``overrides`` (fresh scan and search
    caches, so each stage runs)."""
    from layerprune import paths
    from layerprune.memory.measure import measure_job
    from layerprune.memory.predict import Target, predict

    monkeypatch.setattr(paths, "scan_cache_dir", lambda: tmp_path / "scans")
    cfg = validate(compose(overrides))
    predicted = {p.stage: p.bytes for p in predict(cfg, Target("cpu"))}
    measured = measure_job(cfg, tmp_path / "job")
    assert set(predicted) <= set(measured)
    return {s: (predicted[s], measured[s]) for s in predicted}


def _assert_close(pairs: dict[str, tuple[int, int]]) -> None:
    off = {
        s: f"predicted {p / 1e6:.2f} MB, measured {m / 1e6:.2f} MB"
        for s, (p, m) in pairs.items()
        if abs(p - m) > TOLERANCE * m
    }
    assert not off, off


# -- the model against measurements --------------------------------------------------------


def test_tiny_model_stages_within_15_percent(tmp_path, monkeypatch):
    """Load, scan, LoRA healing (and its merged copy), evaluation."""
    job = ["pruning_method=deeper_layers", "healing=lora", *HEAL]
    pairs = _compare(["model=tiny-llama", *SMALL, *job], tmp_path, monkeypatch)
    assert set(pairs) == {"load", "scan", "heal", "evaluate"}
    _assert_close(pairs)


@pytest.mark.slow
@pytest.mark.parametrize(
    "job",
    [
        ["pruning_method=ppl", "healing=partial", *HEAL, *SPEED],
        ["pruning_method=deeper_layers", "healing=kd", *HEAL],
    ],
    ids=["ppl-partial-speed", "kd"],
)
def test_tiny_model_search_partial_kd_speed_within_15_percent(job, tmp_path, monkeypatch):
    pairs = _compare(["model=tiny-llama", *SMALL, *job], tmp_path, monkeypatch)
    _assert_close(pairs)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2", "mistral"])
def test_tiny_families_finercut_within_15_percent(family, tmp_path, monkeypatch):
    job = ["pruning_method=finercut", "calibration=wiki", *SMALL[:3], "healing=none"]
    pairs = _compare([f"model=tiny-{family}", *SMALL, *job], tmp_path, monkeypatch)
    # which sublayers the search removes is not known before it runs: the model assumes the
    # lightest (attention) go, so the pruned model's stages are bounded from above
    predicted, measured = pairs.pop("evaluate")
    assert measured <= predicted <= 1.5 * measured
    assert "search" in pairs
    _assert_close(pairs)


REAL = ["smollm2-135m", "gemma3-270m", "qwen2.5-0.5b"]


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.parametrize("model", REAL)
def test_offline_models_stages_within_15_percent(model, tmp_path, monkeypatch):
    if not (have_asset(model) and have_asset("text")):
        pytest.skip(f"assets {model} / text not built: run `make assets`")
    job = ["pruning_method=deeper_layers", "healing=lora", *HEAL]  # speed: the tiny tests
    _assert_close(_compare([f"model={model}", *SMALL, *job], tmp_path, monkeypatch))


# -- what the model is made of ---------------------------------------------------------------


def test_hub_model_shapes_are_the_public_parameter_counts():
    """The bundled configs give the models' published parameter counts, on the meta device."""
    from layerprune.memory.shapes import bundled_config, meta_model

    counts = {
        "meta-llama/Llama-2-7b-hf": 6_738_415_616,
        "meta-llama/Llama-2-70b-hf": 68_976_648_192,
        "meta-llama/Meta-Llama-3-8B": 8_030_261_248,
        "Qwen/Qwen2-7B": 7_615_616_512,
    }
    for hub_id, n in counts.items():
        model = meta_model(bundled_config(hub_id), torch.bfloat16)
        assert sum(p.numel() for p in model.parameters()) == n, hub_id


def test_nf4_weights_are_4_bits_plus_constants_for_block_linears_only():
    from layerprune.memory.predict import nf4_bytes
    from layerprune.memory.shapes import Shapes

    shapes = Shapes(1, (1000 * 2 + 10,), (0,), (1000,), 500, 8, 10, 0, 2)
    # 1000 linear weights: 500 bytes of nibbles + 15 absmax bytes + 0 second-level; the
    # block's 10 other bytes and the 500 outside stay as they are
    assert nf4_bytes(shapes) == 500 + 10 + 500 + 1000 // 64 + 1000 // 4096


def test_live_bytes_counts_a_tensor_until_it_is_freed():
    from layerprune.memory.measure import LiveBytes

    with LiveBytes() as mode:
        a = torch.empty(1000, dtype=torch.float32)
        b = torch.empty(500, dtype=torch.float64)
        view = a[10:]  # no new storage
        del a, b
        assert mode.current == 4000  # ``view`` keeps a's storage alive
        del view
    assert mode.current == 0 and mode.peak == 8000


def test_meta_run_counts_as_the_cpu_does():
    """A forward and backward of a tiny model allocate the same bytes on the meta device as
    on the CPU (the memory model's premise)."""
    from layerprune.config import RandomModelConfig
    from layerprune.memory.measure import LiveBytes
    from layerprune.memory.simulate import meta_run, tokens
    from layerprune.models.random_model import random_model

    spec = RandomModelConfig(num_hidden_layers=2)
    peaks = []
    for device in ("cpu", "meta"):
        with torch.device(device):
            model = random_model(spec).train()
        ids = tokens(2, 16) if device == "meta" else torch.randint(0, 256, (2, 16))
        ctx = meta_run() if device == "meta" else LiveBytes()
        with ctx as run:
            model(input_ids=ids, labels=ids).loss.backward()
        peaks.append(run.peak)
    assert peaks[0] == peaks[1]


# -- preflight and CLI -----------------------------------------------------------------------


def test_preflight_stops_a_job_that_cannot_fit_before_loading(monkeypatch):
    """Llama-2-70B on this CPU: one line naming the stage, the GB and the device, and nothing
    loaded (the loader is never called)."""
    from layerprune.memory import devices
    from layerprune.models import load
    from layerprune.preflight import check_memory

    monkeypatch.setattr(devices, "available_ram", lambda: 24 * 2**30)
    monkeypatch.setattr(load, "load_model", lambda *a, **k: pytest.fail("loaded"))
    cfg = validate(compose(["model=llama-2-70b", "model.device=cpu"]))
    with pytest.raises(LayerpruneError) as e:
        check_memory(cfg)
    line = str(e.value)
    assert "\n" not in line
    assert line.startswith("the load stage needs about 275.9 GB")
    assert "25.8 GB usable" in line and "memory_check=false" in line


def test_preflight_lets_a_small_job_run_and_can_be_switched_off(monkeypatch):
    from layerprune.memory import devices
    from layerprune.preflight import check_memory, preflight

    monkeypatch.setattr(devices, "available_ram", lambda: 24 * 2**30)
    check_memory(validate(compose(["model=tiny-llama"])))  # no error
    monkeypatch.setattr(devices, "available_ram", lambda: 2**20)  # 1 MiB: nothing fits
    cfg = validate(compose(["model=tiny-llama", "memory_check=false", "benchmark=none"]))
    preflight(cfg)  # switched off: no error


@pytest.mark.slow
def test_a_fix_is_offered_that_fits(monkeypatch):
    """QLoRA at the paper's batch on Llama-2-7B without checkpointing does not fit one
    A100-40GB; the advice names a setting under which the memory model says it fits."""
    from layerprune.memory import devices
    from layerprune.memory.advice import advise

    cfg = validate(
        compose(
            ["model=llama-2-7b", "healing=qlora_gromov", "healing.gradient_checkpointing=false"]
        )
    )
    heal = next(v for v in advise(cfg, devices.named("a100-40gb")) if v.peak.stage == "heal")
    assert not heal.fits
    assert heal.fix == "healing.gradient_checkpointing=true"


def test_cli_prints_the_70b_rows_for_one_and_eight_gpus(capsys, monkeypatch):
    from layerprune.memory import cli

    monkeypatch.setattr(
        "sys.argv",
        [
            "layerprune-memory",
            "model=llama-2-70b",
            "device=a100-80gb",
            "gpus=8",
            "speed=none",
            "benchmark=none",
        ],
    )
    cli.main()
    out = capsys.readouterr().out
    assert "8 x a100-80gb" in out
    load = next(line for line in out.splitlines() if line.startswith("load"))
    assert load.split()[1:3] == ["138.0", "17.2"] and "yes" in load


@pytest.mark.slow
def test_the_preflight_quick_bound_is_above_every_predicted_stage():
    """The preflight skips the exact model when ``upper_bound`` fits easily: it must be a
    bound."""
    from layerprune.memory.predict import Target, predict, upper_bound

    for overrides in (
        ["model=tiny-llama", "healing=lora"],
        ["model=tiny-llama", "pruning_method=finercut", "calibration=wiki", "healing=kd"],
    ):
        cfg = validate(compose(overrides))
        assert upper_bound(cfg) >= max(p.bytes for p in predict(cfg, Target("cpu")))
