"""Fault injection: each damage a user has met, applied to a real cache, store or asset file;
the next run recovers with one warning naming the file and gives a clean run's numbers."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from layerprune import pipeline
from layerprune.config import ModelConfig, validate
from tests.conftest import ASSET_HOME, compose, needs_assets

TINY = ["model=tiny-llama", "calibration.num_sequences=4", "calibration.seq_len=32"]
PPL = [
    "benchmark=perplexity",
    "benchmark.perplexity.0.max_tokens=512",
    "benchmark.perplexity.0.context_length=128",
    "benchmark.perplexity.0.stride=128",
]
needs_text = needs_assets("text")
needs_benchmarks = needs_assets("text", "benchmarks")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh cache home that sees the built text and benchmark data (symlinks)."""
    home = tmp_path / "home"
    home.mkdir()
    for name in ("text", "datasets"):
        if (ASSET_HOME / name).exists():
            (home / name).symlink_to(ASSET_HOME / name)
    monkeypatch.setenv("LAYERPRUNE_HOME", str(home))
    monkeypatch.setenv("LAYERPRUNE_EVAL_CACHE", str(home / "eval_cache"))
    return home


def run(overrides: list[str], out: Path):
    cfg = compose(overrides)
    return pipeline.run(validate(cfg), OmegaConf.to_container(cfg), out)


def damaged(caplog, path: Path) -> bool:
    """One warning named the file, and the file was moved aside."""
    said = any("damaged" in r.message and str(path) in r.message for r in caplog.records)
    return said and any(path.parent.glob(f"{path.name}.corrupt-*"))


def garbage(path: Path) -> None:
    path.write_bytes(b"\x00garbage\xff" * 37)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


@needs_text
@pytest.mark.parametrize("damage", [truncate, garbage])
def test_a_damaged_scan_cache_is_moved_aside_and_recomputed(damage, home, tmp_path, caplog):
    job = [*TINY, "pruning_method=deeper_layers", "fraction=0.25", *PPL]
    clean = run(job, tmp_path / "a")
    (scan,) = (home / "scans").glob("*.pt")
    damage(scan)
    with caplog.at_level(logging.WARNING):
        again = run(job, tmp_path / "b")
    assert damaged(caplog, scan) and again.scan_cache == "miss"
    assert again.plan == clean.plan and again.metrics == clean.metrics
    assert run(job, tmp_path / "c").scan_cache == "hit"  # the recomputed entry serves again


@needs_text
def test_a_garbage_search_cache_is_moved_aside_and_searched_again(home, tmp_path, caplog):
    job = [*TINY, "pruning_method=finercut", "metric=js", "fraction=0.125", "benchmark=none"]
    clean = run(job, tmp_path / "a")
    (order,) = (home / "scans").glob("finercut-*.json")
    order.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        again = run(job, tmp_path / "b")
    assert damaged(caplog, order) and again.plan == clean.plan


@needs_benchmarks
@pytest.mark.parametrize("damage", [truncate, garbage])
def test_a_damaged_request_cache_is_moved_aside_before_scoring(damage, home, tmp_path, caplog):
    job = [*TINY, "pruning_method=last_layers", "fraction=0.25", "benchmark=arc_easy"]
    job.append("benchmark.tasks.0.limit=3")
    clean = run(job, tmp_path / "a")
    (db,) = (home / "eval_cache").rglob("requests_rank0.db")
    damage(db)
    with caplog.at_level(logging.WARNING):
        again = run(job, tmp_path / "b")
    assert damaged(caplog, db)
    assert again.metrics == clean.metrics and again.eval_cache["misses"] == 12


@needs_text
def test_a_truncated_stored_result_is_moved_aside_and_the_job_rerun(home, tmp_path, caplog):
    from layerprune.cli import run_job
    from layerprune.store import RunStore, job_key

    overrides = [*TINY, "pruning_method=last_layers", "fraction=0.25", *PPL]
    overrides.append(f"store_dir={tmp_path / 'store'}")
    cfg = compose(overrides)
    resolved = OmegaConf.to_container(cfg)
    clean = run_job(validate(cfg), resolved, tmp_path / "a", False)
    stored = RunStore(tmp_path / "store").path(job_key(resolved))
    truncate(stored)
    with caplog.at_level(logging.WARNING):
        again = run_job(validate(cfg), resolved, tmp_path / "b", False)
    assert damaged(caplog, stored) and again.metrics == clean.metrics
    assert json.loads(stored.read_text())["metrics"] == clean.metrics  # stored again, whole


@needs_text
def test_force_recomputes_the_unpruned_baseline_too(home, tmp_path, caplog, monkeypatch):
    from hydra import initialize_config_dir

    from layerprune import cli

    monkeypatch.chdir(tmp_path)
    overrides = [*TINY, "pruning_method=last_layers", "fraction=0.25", *PPL, "store_dir=store"]
    first, forced = compose(overrides), compose([*overrides, "force=true"])

    def single_run(cfg, out, argv):  # as the CLI runs one job (with the unpruned printout)
        with initialize_config_dir(config_dir=cli.CONF_DIR, version_base="1.3"):
            cli.run_job(validate(cfg), OmegaConf.to_container(cfg), tmp_path / out, False, argv)

    single_run(first, "a", overrides)
    (baseline,) = [
        p
        for p in (tmp_path / "store").glob("*/results.json")
        if json.loads(p.read_text())["plan"]["method"] == "none"
    ]
    stamp = baseline.stat().st_mtime_ns
    single_run(forced, "b", [*overrides, "force=true"])
    assert baseline.stat().st_mtime_ns != stamp  # the baseline ran again and was stored


@pytest.mark.slow
def test_a_damaged_healing_snapshot_is_moved_aside(tmp_path, monkeypatch, caplog):
    """A constant-rate run's end state is garbage: the next, longer run starts from step 0 and
    ends where a clean run ends."""
    from layerprune.heal.lora import LoRA
    from tests.test_heal import COMMON, LORA, data, job, trainable

    monkeypatch.setenv("LAYERPRUNE_HOME", str(tmp_path / "home"))
    kw = {**COMMON, "schedule": "constant"}

    def train(steps: int, folder: Path, resume: Path):
        healer = LoRA(**{**kw, "steps": steps}, **LORA)
        model = healer.student(job(folder))
        torch.manual_seed(0)
        return healer.train(model, data(), folder / "loss.csv", resume), trainable(model)

    _, clean = train(5, tmp_path / "a", tmp_path / "r1")
    train(2, tmp_path / "b", tmp_path / "r2")
    (snapshot,) = (tmp_path / "r2").glob("final-*.pt")
    garbage(snapshot)
    with caplog.at_level(logging.WARNING):
        result, weights = train(5, tmp_path / "c", tmp_path / "r2")
    assert damaged(caplog, snapshot) and result.resumed_from == 0
    for name, p in clean.items():
        torch.testing.assert_close(weights[name], p)


# -- assets ---------------------------------------------------------------------------------


def fake_asset(home: Path) -> tuple[str, Path]:
    """A tiny model saved as a built asset (manifest with file hashes, as the build writes)."""
    from layerprune.assets.verify import file_records
    from layerprune.models.load import load_model
    from tests.conftest import tiny_config

    lm = load_model(tiny_config("llama"))
    folder = home / "models" / "tiny-asset"
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    manifest = {
        "name": "tiny-asset",
        "kind": "model",
        "packages": [],
        "files": file_records(folder),
    }
    (folder / "asset.json").write_text(json.dumps(manifest))
    return "tiny-asset", folder


def test_a_flipped_byte_in_an_asset_is_caught_by_verify_and_by_the_cache_keys(
    tmp_path, monkeypatch, caplog, capsys
):
    from layerprune.assets import build, cli, registry
    from layerprune.models.load import load_model

    home = tmp_path / "home"
    monkeypatch.setenv("LAYERPRUNE_HOME", str(home))
    name, folder = fake_asset(home)
    monkeypatch.setitem(registry.ASSETS, name, registry.Asset(name, "model", parts=()))
    monkeypatch.setattr(cli, "ASSETS", registry.ASSETS)
    monkeypatch.setattr(build, "ASSETS", registry.ASSETS)
    cfg = ModelConfig(name=name, source="asset", id=name)
    before = load_model(cfg).identity
    assert cli.main(["--verify", name]) == 0
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    assert cli.main(["--verify", name]) == 1
    out = capsys.readouterr().out
    assert "model.safetensors: sha256" in out and f"--rebuild {name}" in out
    with caplog.at_level(logging.WARNING):
        after = load_model(cfg).identity
    assert after != before  # scans, searches and request caches are keyed apart
    assert any("model.safetensors differs from what was built" in r.message for r in caplog.records)


def test_a_malformed_model_config_is_named_in_one_line(tmp_path):
    from layerprune.cli import precheck

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{\n  broken")
    (folder / "model.safetensors").write_bytes(b"")
    error = precheck(["model.source=path", f"model.id={folder}", "model.name=m"])
    assert error.startswith(f"model file {folder / 'config.json'} is not valid JSON")
    assert "\n" not in error


@pytest.mark.slow
def test_a_read_only_store_fails_at_once_with_one_line(tmp_path):
    """Before any model loads or any folder is made (as root, chmod does not stop writes: a
    read-only file system does)."""
    if os.geteuid() == 0:
        store = Path("/sys/layerprune-test-store")
    else:
        store = tmp_path / "ro"
        store.mkdir(mode=0o555)
    start = time.perf_counter()
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "layerprune"), f"store_dir={store}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.perf_counter() - start
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: store_dir {store} is not writable")
    assert not (tmp_path / "outputs").exists()
    print(f"read-only store refused in {seconds:.2f} s")


def test_a_truncated_teacher_topk_cache_is_moved_aside_and_rebuilt(tmp_path, monkeypatch, caplog):
    from layerprune import paths
    from layerprune.heal.kd import teacher_topk
    from tests.test_heal import data, job

    monkeypatch.setenv("LAYERPRUNE_HOME", str(tmp_path / "home"))
    logp, ids = teacher_topk(job(tmp_path / "a"), data(), 1.0, 8)
    (path,) = (paths.home() / "teacher").glob("topk-*.pt")
    path.write_bytes(path.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        again, again_ids = teacher_topk(job(tmp_path / "b"), data(), 1.0, 8)
    assert "corrupt" in caplog.text and str(path) in caplog.text
    assert list(path.parent.glob("topk-*.pt.corrupt-*"))
    assert torch.equal(again, logp) and torch.equal(again_ids, ids)
