"""CUDA devices on a CPU-only machine, with real values: ``FakeGPUs`` and ``on_gpu``.

A ``GPUTensor`` holds a real CPU tensor and says it lives on ``cuda:<k>``. Every aten op that
meets one (or makes a tensor with ``device="cuda:k"``) is first run by torch's own
``FakeTensorMode`` on fake tensors of the same shapes and devices: it raises where CUDA raises
("Expected all tensors to be on the same device", an in-place result on the wrong device) and
says where the outputs live; then the op runs on the CPU values. So code under test computes
its real numbers (``.item()``, boolean masks and slicing work) while device mistakes fail as
they would on GPUs. Ops whose output shape depends on values (``nonzero``, ``item``), which
fake tensors cannot run, are checked by CUDA's rule instead: one device, bar CPU scalars (and
CPU indices of an index).

``Tensor.__getitem__`` / ``__setitem__`` are run on the CPU values here (torch's Python
binding would look for a CUDA device guard this build lacks); their index tensors must be on
the CPU or the indexed tensor's device, as CUDA requires.

Use: ``with FakeGPUs(): model = accelerate.dispatch_model(model, device_map={...: "cuda:1"})``
(or ``model.to("cuda:0")`` with ``torch.__future__.set_overwrite_module_params_on_conversion``)
and run the code under test inside the same ``with``. What it cannot show: CUDA's kernels
(their rounding, bf16 / flash attention paths), memory, speed, streams.
"""

from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensor,
    FakeTensorMode,
)
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

CPU = torch.device("cpu")


class GPUTensor(torch.Tensor):
    """A CPU tensor (``inner``) that reports ``device`` (``cuda:k``)."""

    inner: torch.Tensor

    @staticmethod
    def __new__(cls, inner: torch.Tensor, device: torch.device):
        t = torch.Tensor._make_wrapper_subclass(
            cls,
            inner.size(),
            strides=inner.stride(),
            storage_offset=inner.storage_offset(),
            dtype=inner.dtype,
            device=device,
            requires_grad=inner.requires_grad,
        )
        t.inner = inner
        return t

    def __repr__(self) -> str:
        return f"GPUTensor({self.inner!r}, device={self.device})"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__):
            return _index(func, *args)
        if func in _TO_PYTHON:  # the binding wants a CUDA device guard; the value is on the CPU
            return func(*_map(_unwrap, args), **kwargs)
        try:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        except RuntimeError as e:  # a binding that wants the guard (nonzero): CUDA's rule
            if "not linked with support for cuda" not in str(e):
                raise
        inputs = [x for x in _leaves((args, kwargs)) if isinstance(x, torch.Tensor)]
        device = _common_device(inputs)
        return _wrap(func(*_map(_unwrap, args), **_map(_unwrap, kwargs)), device, inputs)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {})


_TO_PYTHON = (
    torch.Tensor.__float__,
    torch.Tensor.__int__,
    torch.Tensor.__bool__,
    torch.Tensor.__index__,
    torch.Tensor.tolist,
)


class FakeGPUs(TorchDispatchMode):
    """Inside it, ``torch.empty(..., device="cuda:1")`` and every op on ``GPUTensor``s run as
    the module doc says (``torch.cuda``'s lazy initialisation, which a factory call on a CUDA
    device asks for first, does nothing while it is on)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {})

    def __enter__(self):
        self._lazy_init, torch.cuda._lazy_init = torch.cuda._lazy_init, lambda: None
        self._from_data = _FromData()
        self._from_data.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        torch.cuda._lazy_init = self._lazy_init
        self._from_data.__exit__(*exc)
        return super().__exit__(*exc)


class _FromData(TorchFunctionMode):
    """``torch.tensor(data, device="cuda:k")`` (built on the CPU, then moved in C++ where no
    dispatch mode sees it): built on the CPU here, then said to be on ``cuda:k``."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        device = kwargs.get("device")
        if func in (torch.tensor, torch.as_tensor) and _is_gpu(device):
            return _as_gpu(func(*args, **{**kwargs, "device": CPU}), torch.device(device))
        return func(*args, **kwargs)


def on_gpu(t: torch.Tensor, k: int) -> GPUTensor:
    """``t`` (a CPU tensor) as if it lived on ``cuda:k``."""
    return GPUTensor(t, torch.device("cuda", k))


def _leaves(x) -> list:
    """The leaves of an op's arguments or outputs (tuples, lists and dicts of them)."""
    if isinstance(x, (list, tuple)):
        return [y for z in x for y in _leaves(z)]
    if isinstance(x, dict):
        return [y for z in x.values() for y in _leaves(z)]
    return [x]


def _map(f, x):
    """``x`` with ``f`` applied to its leaves (``_leaves``)."""
    if isinstance(x, (list, tuple)):
        return type(x)(_map(f, y) for y in x)
    if isinstance(x, dict):
        return {k: _map(f, v) for k, v in x.items()}
    return f(x)


def _is_gpu(device) -> bool:
    return device is not None and torch.device(device).type == "cuda"


def _unwrap(x):
    return x.inner if isinstance(x, GPUTensor) else x


_fake_mode = FakeTensorMode(allow_non_fake_inputs=False)


def _fake(x):
    if not isinstance(x, torch.Tensor):
        return x
    real = _unwrap(x)
    meta = torch.empty_strided(real.shape, real.stride(), dtype=real.dtype, device="meta")
    return FakeTensor(_fake_mode, meta, x.device)


def _kind(x):
    return x if isinstance(x, (torch.device, str)) else type(x)


_seen: dict = {}  # (op, where its tensors are) -> output devices: the answer never changes


def _output_devices(func, args, kwargs) -> list[torch.device] | None:
    """Where the outputs live, as fake tensors say (raises on a mismatch); None where fake
    tensors cannot run ``func`` (the output depends on values)."""
    where = tuple(
        (x.device, x.dim() == 0) if isinstance(x, torch.Tensor) else _kind(x)
        for x in _leaves((args, kwargs))
    )
    key = (func, len(args), tuple(kwargs), where)
    if key not in _seen:
        _seen[key] = _fake_devices(func, args, kwargs)
    return _seen[key]


def _fake_devices(func, args, kwargs) -> list[torch.device] | None:
    fake_args, fake_kwargs = _map(_fake, (args, kwargs))
    try:
        with _fake_mode:
            out = func(*fake_args, **fake_kwargs)
    except (DataDependentOutputException, DynamicOutputShapeException):
        return None
    except RuntimeError as e:  # a fake kernel that asks for the CUDA device guard
        if "not linked with support for cuda" not in str(e):
            raise
        return None
    return [o.device for o in _leaves(out) if isinstance(o, torch.Tensor)]


def _common_device(tensors: list[torch.Tensor], loose: list[torch.Tensor] = ()) -> torch.device:
    """CUDA's rule: all on one device, bar CPU scalars (and ``loose`` tensors on the CPU)."""
    devices = {
        t.device
        for t in tensors
        if not (t.device == CPU and (t.dim() == 0 or any(t is u for u in loose)))
    }
    if len(devices) > 1:
        raise RuntimeError(f"Expected all tensors to be on the same device, found {devices}")
    return devices.pop() if devices else CPU


def _wrap(outputs, devices: list[torch.device] | torch.device, inputs: list):
    """Real outputs as ``GPUTensor``s where their device is a GPU; an output that is an input's
    own tensor (in-place, ``out=``) comes back as that input."""
    same = {id(_unwrap(x)): x for x in inputs if isinstance(x, torch.Tensor)}
    n = iter(range(1 << 30))

    def wrap(o):
        if not isinstance(o, torch.Tensor):
            return o
        device = devices if isinstance(devices, torch.device) else devices[next(n)]
        if id(o) in same and same[id(o)].device == device:
            return same[id(o)]
        return _as_gpu(o, device) if _is_gpu(device) else o

    return _map(wrap, outputs)


def _as_gpu(t: torch.Tensor, device: torch.device) -> GPUTensor:
    """``t`` said to be on ``device``; an inference tensor exactly where ``t`` is one (a view
    of a normal tensor made in inference mode is normal, any view of an inference one is not)."""
    with torch.inference_mode(t.is_inference()):
        return GPUTensor(t, device)


def _run(func, args, kwargs):
    inputs = _leaves((args, kwargs))
    if not any(isinstance(x, GPUTensor) or _is_gpu_device(x) for x in inputs):
        return func(*args, **kwargs)
    devices = _output_devices(func, args, kwargs)
    if devices is None:  # value-dependent: CUDA's rule, the outputs on the inputs' device
        loose = [x for x in inputs if isinstance(x, torch.Tensor)]
        indices = loose[1:] if func is torch.ops.aten.index.Tensor else []
        devices = _common_device(loose, indices)
    real_args, real_kwargs = _map(_to_cpu, (args, kwargs))
    return _wrap(func(*real_args, **real_kwargs), devices, inputs)


def _is_gpu_device(x) -> bool:
    return isinstance(x, torch.device) and x.type == "cuda"


def _to_cpu(x):
    """An argument as the CPU op takes it: a ``GPUTensor``'s values, a CUDA device the CPU."""
    return CPU if _is_gpu_device(x) else _unwrap(x)


def _index(func, t, index, *value):
    """``t[index]`` / ``t[index] = value`` on the CPU values; index tensors on the CPU or
    ``t``'s device (a value may come from any device, as ``copy_`` allows)."""
    parts = index if isinstance(index, tuple) else (index,)
    for p in _leaves(parts):
        if isinstance(p, torch.Tensor) and p.device not in (CPU, t.device):
            raise RuntimeError(
                f"indices should be either on cpu or on the same device as the indexed "
                f"tensor ({t.device}), found {p.device}"
            )
    real = _map(_unwrap, parts)
    real = real if isinstance(index, tuple) else real[0]
    if func is torch.Tensor.__setitem__:
        _unwrap(t)[real] = _unwrap(value[0])
        return None
    out = _unwrap(t)[real]
    return _as_gpu(out, t.device) if isinstance(t, GPUTensor) else out
