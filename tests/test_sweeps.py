"""Sweeps: experiment files compose at every sweep point; the run store skips finished jobs;
a killed sweep relaunched ends with exactly the full set of results."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from layerprune.config import validate
from layerprune.report.table import load_results
from tests.conftest import CONF_DIR, compose, needs_assets

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
LAYERPRUNE = str(Path(sys.executable).parent / "layerprune")
SWEEP = [
    "model=tiny-llama,tiny-qwen2",
    "pruning_method=last_layers",
    "fraction=0.25,0.5",
    "benchmark=none",
    "speed=none",
]


def sweep_points(experiment: str) -> list[list[str]]:
    """The overrides of every job ``layerprune -m experiment=NAME`` would launch."""
    cfg = compose([f"experiment={experiment}"], hydra=True)
    params = cfg.hydra.sweeper.params or {}
    keys = list(params)
    values = [str(params[k]).split(",") for k in keys]
    return [
        [f"{k}={v}" for k, v in zip(keys, combo, strict=True)]
        for combo in itertools.product(*values)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_at_every_sweep_point(experiment):
    points = sweep_points(experiment)
    assert points or experiment == "tiny_smoke"
    for overrides in points or [[]]:
        checked = validate(compose([f"experiment={experiment}", *overrides]))
        if experiment != "tiny_smoke":
            assert checked.experiment == experiment


def run_sweep(cwd: Path, extra: list[str] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [LAYERPRUNE, "-m", *SWEEP, *extra], cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_parallel_sweep_fills_store_then_skips(tmp_path):
    first = run_sweep(tmp_path, ["hydra/launcher=local", "hydra.sweep.dir=sweep1"])
    assert first.returncode == 0, first.stderr[-3000:]
    store = list((tmp_path / "outputs" / "runs").glob("*/results.json"))
    assert len(store) == 4
    table = load_results(tmp_path / "sweep1")
    assert sorted(zip(table["model"], table["fraction"], strict=True)) == [
        ("tiny-llama", 0.25),
        ("tiny-llama", 0.5),
        ("tiny-qwen2", 0.25),
        ("tiny-qwen2", 0.5),
    ]
    assert (tmp_path / "sweep1" / "report" / "table.csv").exists()  # the end-of-sweep callback

    again = run_sweep(tmp_path, ["hydra.sweep.dir=sweep2"])
    assert again.returncode == 0
    assert (
        again.stdout.count("skipped: already stored")
        + again.stderr.count("skipped: already stored")
        == 4
    )
    assert len(list((tmp_path / "outputs" / "runs").glob("*/results.json"))) == 4


@pytest.mark.slow
def test_killed_sweep_relaunched_runs_only_the_missing_jobs(tmp_path):
    store = tmp_path / "outputs" / "runs"
    proc = subprocess.Popen(
        [LAYERPRUNE, "-m", *SWEEP, "hydra.sweep.dir=killed"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while not list(store.glob("*/results.json")) and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(store.glob("*/results.json")))
    assert 0 < done_before <= 4  # killed after at least one job was stored

    again = run_sweep(tmp_path, ["hydra.sweep.dir=relaunch"])
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert log.count("skipped: already stored") == done_before
    assert len(list(store.glob("*/results.json"))) == 4
    assert len(load_results(tmp_path / "relaunch")) == 4
    assert not list(store.glob("*/.*.tmp"))  # no half-written file survived the kill


@pytest.mark.slow
def test_wandb_offline_run_per_job(tmp_path):
    """tracking=wandb writes an offline run (no network) with the job's numbers and plan."""

    proc = subprocess.run(
        [LAYERPRUNE, "experiment=tiny_smoke", "tracking=wandb"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "wandb").rglob("offline-run-*/run-*.wandb")
    data = run.read_bytes()  # the offline log (protobuf records): to be `wandb sync`-ed later
    assert b"params/after" in data and b"removed_blocks" in data and b"tiny_smoke" in data


@pytest.mark.slow
def test_submitit_local_sweep_fills_the_store(tmp_path):
    """The cluster path: the submitit launcher (as hydra/launcher=slurm) with its local
    executor runs each job in its own process; the run store holds both results."""
    proc = subprocess.run(
        [
            LAYERPRUNE,
            "-m",
            "model=tiny-llama",
            "pruning_method=last_layers",
            "fraction=0.25,0.5",
            "benchmark=none",
            "speed=none",
            "hydra/launcher=submitit_local",
            "hydra.sweep.dir=sub",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((tmp_path / "outputs" / "runs").glob("*/results.json"))) == 2
    assert sorted(load_results(tmp_path / "sub")["fraction"]) == [0.25, 0.5]
    assert (
        len(list((tmp_path / "sub" / ".submitit").rglob("*_result.pkl"))) == 2
    )  # submitit ran them


@pytest.mark.slow
@needs_assets("text")
def test_stored_job_gets_its_figures_and_a_single_run_shows_the_unpruned_model(tmp_path):
    job = [
        LAYERPRUNE,
        "model=tiny-llama",
        "pruning_method=deeper_layers",
        "fraction=0.25",
        "calibration.num_sequences=4",
        "calibration.seq_len=32",
        "benchmark=arc_easy",
        "benchmark.tasks.0.limit=4",
        "speed=structure",
    ]
    run = lambda folder: subprocess.run(  # noqa: E731
        [*job, f"hydra.run.dir={folder}"], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    first = run("a")
    assert first.returncode == 0, first.stderr[-3000:]
    heatmap = (tmp_path / "a" / "distance_heatmap.png").read_bytes()
    # each metric beside the unpruned model's on the same items (run once, then stored)
    assert "arc_easy/acc = " in first.stdout and "   unpruned " in first.stdout
    assert "speed (cpu): " in first.stdout and "KV cache 0.75x, weights" in first.stdout
    assert (tmp_path / "a" / "unpruned" / "results.json").exists()
    second = run("b")
    assert second.returncode == 0, second.stderr[-3000:]
    assert (second.stdout + second.stderr).count("skipped: already stored") == 1
    assert "   unpruned " in second.stdout  # from the store: no third job
    assert (tmp_path / "b" / "distance_heatmap.png").read_bytes() == heatmap
    assert len(list((tmp_path / "outputs" / "runs").glob("*/results.json"))) == 2


def test_slurm_launcher_resources_and_requeue_are_config():
    """GPUs, memory, time and requeue-on-timeout are keys of the plugin's own schema (a
    misspelled key fails to compose) with the values conf/hydra/launcher/slurm.yaml sets."""
    launcher = compose(["hydra/launcher=slurm"], hydra=True).hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    got = {k: launcher[k] for k in ("nodes", "gpus_per_node", "mem_gb", "timeout_min")}
    assert got == {"nodes": 1, "gpus_per_node": 1, "mem_gb": 64, "timeout_min": 720}
    assert (launcher.max_num_timeout, launcher.signal_delay_s) == (3, 300)
    over = ["hydra.launcher.gpus_per_node=4", "hydra.launcher.max_num_timeout=0"]
    launcher = compose(["hydra/launcher=slurm", *over], hydra=True).hydra.launcher
    assert (launcher.gpus_per_node, launcher.max_num_timeout) == (4, 0)


def test_70b_example_takes_a_node_of_eight_gpus_per_job():
    cfg = compose(["experiment=gromov_70b_slurm"], hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (1, 8, 1)
    assert launcher.max_num_timeout > 0 and launcher.mem_gb >= 512
    checked = validate(compose(["experiment=gromov_70b_slurm", "healing=qlora_gromov"]))
    assert (checked.model.name, checked.model.device_map) == ("llama-2-70b", "auto")
    assert checked.calibration.source.value == "hub"  # 256 x 1024 tokens: more than offline
    assert len(sweep_points("gromov_70b_slurm")) == 16
