"""Checks a job's config needs beyond its types, run before any model is loaded (single runs:
in the CLI's up-front check; sweeps: at the start of each job): every task exists (offline:
the asset cache mirrors it; hub: lm-eval knows its name), the fraction leaves a block, the
model folder's JSON files parse, the folders the job writes (run store, outputs, the cache
home) are writable, a method's calibration text holds the sequences it asks for, a checkpoint to be saved fits on the disk, and no stage's predicted peak
memory exceeds the device (``check_memory``: the ``memory`` package, nothing loaded). The model's block count
comes from its config.json (no weights are read)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from layerprune import atomic, paths
from layerprune.config import BenchmarkConfig, Config, DataSource, ModelConfig, ModelSource
from layerprune.errors import LayerpruneError

log = logging.getLogger(__name__)


def preflight(cfg: Config, out_dir: Path | None = None) -> None:
    """Raise ``LayerpruneError`` (one line) for what would fail later (module doc)."""
    check_tasks(cfg.benchmark)
    check_model_files(cfg.model)
    blocks = num_blocks(cfg.model)
    if blocks is not None:
        cfg.pruning_method.count(cfg.fraction, blocks)  # raises if nothing would remain
    check_calibration_text(cfg, blocks)
    out = out_dir or Path("outputs")
    for folder, what in (
        (Path(cfg.store_dir), "store_dir"),
        (out, "the output folder"),
        (paths.home(), "the cache home (LAYERPRUNE_HOME)"),
    ):
        check_writable(folder, what)
    if cfg.save_checkpoint or cfg.healing.wants_checkpoint():
        check_space(cfg.model, out)
    if cfg.memory_check:
        check_memory(cfg)


# a stage stops the job only when its predicted peak exceeds the device by this factor: the
# memory model is within 15% of measured peaks, so a job near the edge is let run
MEMORY_SLACK = 1.10


def check_memory(cfg: Config) -> None:
    """Stop a job whose predicted peak for some stage exceeds the device's memory (CUDA: each
    GPU's total, all visible GPUs for a split model; CPU: available RAM), before anything is
    loaded, naming the stage, the predicted and the available GB and a setting that fits
    (``memory/``). ``memory_check=false`` skips it; a model whose shapes are unknown without
    the Hub is not checked."""
    key = repr(cfg)
    if key not in _MEMORY_CHECKED:  # a single run is checked twice (cli.precheck, the job)
        _MEMORY_CHECKED[key] = _memory_problem(cfg)
    if _MEMORY_CHECKED[key]:
        raise LayerpruneError(_MEMORY_CHECKED[key])


_MEMORY_CHECKED: dict[str, str | None] = {}


def _memory_problem(cfg: Config) -> str | None:
    """The one-line reason the job cannot fit its device, or None (``check_memory``)."""
    import torch

    from layerprune.memory.advice import advise, target_of
    from layerprune.memory.devices import local_cpu, local_cuda
    from layerprune.memory.predict import upper_bound
    from layerprune.models.load import resolve_device

    try:
        if cfg.model.device_map and torch.cuda.is_available():
            device = local_cuda(list(range(torch.cuda.device_count())))
        elif cfg.model.device_map:
            device = local_cpu()  # accelerate's "auto" without a GPU: all on the CPU
        else:
            where = resolve_device(cfg.model.device)
            device = local_cuda([where.index or 0]) if where.type == "cuda" else local_cpu()
        if upper_bound(cfg, target_of(cfg, device)) <= device.usable / 2:
            return None  # fits easily: no need for the exact model
        v = next((v for v in advise(cfg, device, MEMORY_SLACK) if not v.fits), None)
    except LayerpruneError as e:
        log.info("memory not checked: %s", e)
        return None
    if v is None:
        return None
    return (
        f"the {v.peak.stage} stage needs about {v.peak.per_device / 1e9:.1f} GB (predicted, "
        f"{cfg.model.name}), more than the {device.describe()}: {v.fix} "
        "(layerprune-memory shows every stage; memory_check=false skips this check)"
    )


def check_calibration_text(cfg: Config, blocks: int | None) -> None:
    """A method that reads calibration text gets as many sequences as it asks for, or one line
    saying what the text holds (``data.calibration.check_calibration``; without a tokenizer,
    so the packed sequences of a search are counted when the search reads them)."""
    method = cfg.pruning_method
    if method.needs not in ("scan", "search") or cfg.fraction == 0:
        return
    if blocks is not None and method.count(cfg.fraction, blocks) == 0:
        return
    from layerprune.data.calibration import check_calibration

    check_calibration(cfg.calibration, packed=method.needs == "search")


def check_writable(folder: Path, what: str) -> None:
    """``folder`` (or, if it does not exist yet, its nearest existing parent: nothing is made
    here) takes a file, else one line saying which and why."""
    import tempfile

    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is not a folder")
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-check-"):
            pass
    except OSError as e:
        raise LayerpruneError(f"{what} {folder} is not writable: {e.strerror or e}") from e


def _folder(cfg: ModelConfig) -> Path | None:
    if cfg.source == ModelSource.asset:
        return paths.models_dir() / cfg.id
    if cfg.source == ModelSource.path:
        return Path(cfg.id).expanduser()
    return None


def check_model_files(cfg: ModelConfig) -> None:
    """The model folder's JSON files (config, tokenizer, generation) parse; a broken one is
    named in the error instead of surfacing as a bare decoder message."""
    folder = _folder(cfg)
    if folder is None or not folder.is_dir():
        return
    for name in (
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
    ):
        file = folder / name
        if file.exists():
            try:
                json.loads(file.read_text())
            except (ValueError, OSError) as e:
                raise LayerpruneError(f"model file {file} is not valid JSON: {e}") from e


def check_space(cfg: ModelConfig, out: Path) -> None:
    """A checkpoint about the size of the model's weights fits where the job writes."""
    import shutil

    folder = _folder(cfg)
    if folder is None or not folder.is_dir():
        return  # a Hub model's size is not known before it is downloaded
    need = sum(f.stat().st_size for g in ("*.safetensors", "*.bin") for f in folder.glob(g))
    free = shutil.disk_usage(out if out.exists() else Path.cwd()).free
    if need * 1.1 > free:
        raise LayerpruneError(
            f"saving the pruned checkpoint needs up to {need / 2**30:.2f} GiB in {out}; "
            f"{free / 2**30:.2f} GiB free (save_checkpoint=false, or free some space)"
        )


def check_tasks(bench: BenchmarkConfig) -> None:
    names = [t.name for t in bench.tasks]
    if bench.data == DataSource.offline:
        from layerprune.assets.benchmarks import BENCHMARKS

        unknown = [n for n in names if n not in BENCHMARKS]
        if unknown:
            raise LayerpruneError(
                f"no offline data for task(s) {unknown}; offline tasks: {sorted(BENCHMARKS)} "
                "(use benchmark.data=hub for others)"
            )
        return
    known = lm_eval_task_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        import difflib

        hints = {n: difflib.get_close_matches(n, known, 1) for n in unknown}
        said = ", ".join(
            f"{n}" + (f" (did you mean {h[0]}?)" if h else "") for n, h in hints.items()
        )
        raise LayerpruneError(f"unknown lm-eval task(s): {said}")


def lm_eval_task_names() -> set[str]:
    """Every task and group name lm-eval knows; its index takes ~10 s to build, so the names
    are kept per lm-eval version under the asset home."""
    from importlib.metadata import version

    path = paths.home() / f"lm_eval_tasks-{version('lm_eval')}.json"
    if path.exists():
        return set(json.loads(path.read_text()))
    from lm_eval.tasks import TaskManager

    names = sorted(TaskManager().all_tasks)
    atomic.write_json(path, names)
    return set(names)


def num_blocks(cfg: ModelConfig) -> int | None:
    """The model's decoder block count from its config alone; None if that needs the Hub and
    the Hub cannot be reached (the check then happens after loading)."""
    if cfg.source == ModelSource.random:
        return cfg.random.num_hidden_layers
    if cfg.source == ModelSource.hub:
        try:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(
                cfg.id, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
            ).to_dict()
        except Exception as e:  # offline without a cached config: checked after loading
            log.debug("no config for %s before loading: %s", cfg.id, e)
            return None
    else:
        folder = paths.models_dir() / cfg.id if cfg.source == ModelSource.asset else Path(cfg.id)
        file = folder.expanduser() / "config.json"
        if not file.exists():
            return None  # the loader says what is missing
        try:
            config = json.loads(file.read_text())
        except ValueError as e:
            raise LayerpruneError(f"model file {file} is not valid JSON: {e}") from e
    layers = config.get("num_hidden_layers") or config.get("text_config", {}).get(
        "num_hidden_layers"
    )
    return int(layers) if layers else None
