"""Live tensor bytes, measured: what the memory model is checked against on CPU.

``LiveBytes`` is a ``TorchDispatchMode``: every storage an operator creates is counted from
its creation until a weakref finalizer on the storage sees it freed, so the figure is the
bytes of tensors alive (the allocator's view, without its caching or the process's other
memory), at every moment, and ``peak`` is its maximum. Storages that existed before the mode
(the loaded weights) are not seen; ``baseline`` adds them by hand.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class LiveBytes(TorchDispatchMode):
    """Bytes of tensors created inside the mode and still alive; ``peak`` since the last
    ``reset_peak`` (module doc)."""

    meta = False  # count real tensors (``simulate.MetaRun``: meta ones)

    def __init__(self, baseline: int = 0):
        super().__init__()
        self.baseline = baseline
        self.live = 0
        self.peak = baseline
        self._sizes: dict[int, int] = {}  # storage key -> bytes counted

    @property
    def current(self) -> int:
        return self.baseline + self.live

    def reset_peak(self) -> None:
        self.peak = self.current

    def _track(self, storage: torch.UntypedStorage) -> None:
        key = storage._cdata
        size = storage.nbytes()
        old = self._sizes.get(key)
        if old is None:
            self._sizes[key] = size
            weakref.finalize(storage, self._free, key)
        elif size > old:  # an ``out=`` buffer resized
            self._sizes[key] = size
        else:
            return
        self.live += size - (old or 0)
        self.peak = max(self.peak, self.current)

    def _tensors(self, tree) -> Iterator[torch.Tensor]:
        """The dense tensors in ``tree`` (args, kwargs, outputs: tensors, lists of them, one
        level deep) this mode counts: real ones, or meta ones (``meta``)."""
        for x in _flat(tree):
            if x.layout == torch.strided and (x.device.type == "meta") == self.meta:
                yield x

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        seen = {t.untyped_storage()._cdata for t in self._tensors((args, kwargs))}
        out = func(*args, **kwargs)
        for t in self._tensors(out):
            storage = t.untyped_storage()
            if storage._cdata not in seen or storage._cdata in self._sizes:
                self._track(storage)
        return out


def _flat(tree) -> Iterator[torch.Tensor]:
    """Tensors in nested lists, tuples and dicts (what operators take and return)."""
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, list | tuple):
        for x in tree:
            yield from _flat(x)
    elif isinstance(tree, dict):
        for x in tree.values():
            yield from _flat(x)


def state_bytes(*modules: torch.nn.Module) -> int:
    """Bytes of the parameters and buffers of ``modules``, each storage once."""
    seen: dict[int, int] = {}
    for m in modules:
        for t in [*m.parameters(), *m.buffers()]:
            if t.device.type != "meta":
                s = t.untyped_storage()
                seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def track_state(mode: LiveBytes, model: torch.nn.Module) -> None:
    """Count ``model``'s parameters and buffers the mode did not see allocated (weights read
    from a file), each storage until it is freed (a deleted block's weights leave the count)."""
    for t in [*model.parameters(), *model.buffers()]:
        if t.device.type != "meta":
            mode._track(t.untyped_storage())


def measure_job(cfg, out_dir) -> dict[str, int]:
    """Run the job ``cfg`` stage by stage (as ``pipeline.run``) and return each stage's peak
    live tensor bytes, named as ``memory.predict`` names them (load, scan / search, heal,
    evaluate, speed). Weights read from files (not allocated by an operator) are added as
    they are loaded and taken off when freed (``track_state``)."""
    from functools import partial

    from layerprune import pipeline
    from layerprune.job import JobState
    from layerprune.models.load import load_model

    mode = LiveBytes()

    def loader(**kwargs):
        lm = load_model(cfg.model, **kwargs) if kwargs else load_model(cfg.model)
        track_state(mode, lm.model)
        return lm

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    job = JobState(out_dir, cfg.seed, cfg.fraction, partial(loader))
    peaks: dict[str, int] = {}
    with mode:
        for stage in pipeline.stages(cfg):
            mode.reset_peak()
            stage.run(job)
            name = {"eval": "evaluate", "select": cfg.pruning_method.needs or "select"}
            peaks[name.get(stage.name, stage.name)] = mode.peak
    return peaks


def saved_for_backward(model: torch.nn.Module, ids: torch.Tensor) -> int:
    """Bytes of the tensors one training forward of ``ids`` (language-modelling loss) saves
    for backward: each storage once, the weights not counted (saved-tensor hooks). What
    gradient checkpointing and the activation terms of the memory model are about."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = storage.nbytes()
        return t  # kept alive until backward: no two saved storages share an address

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    return sum(seen.values())
