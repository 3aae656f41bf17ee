"""Running the job's own code on the meta device and counting what it allocates.

A meta tensor has a shape, a dtype and a storage size but no data, so the real forward and
backward passes, the scan's arithmetic, a training step or the search evaluator run on a meta
model in milliseconds at any size (70B included) and allocate exactly the tensors they
allocate on a real device. ``MetaRun`` counts them as ``measure.LiveBytes`` counts real ones
and answers what a meta tensor cannot: ``.item()`` reads 1 (so ``if x.all()`` is true and
a step counter is positive) and a boolean mask keeps every element (the worst case).

Attention is the one kernel whose memory depends on the device: ``F.scaled_dot_product_
attention`` runs as a flash-style kernel (as on CUDA, and as the CPU's fused kernel does
here): its output and log-sum-exp are new, the ``[T, T]`` scores never exist.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_map

from layerprune.memory.measure import LiveBytes, _flat

aten = torch.ops.aten


class MetaRun(LiveBytes):
    """``LiveBytes`` over meta tensors (module doc)."""

    meta = True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten._local_scalar_dense.default:
            return 1
        if func is aten.nonzero.default:
            t = args[0]
            return torch.empty(t.numel(), t.dim(), dtype=torch.long, device=t.device)
        leaves = list(_flat((args, kwargs)))
        if any(t.device.type == "meta" for t in leaves):
            if func is aten._to_copy.default:  # a meta result stays meta (``.cpu()``, ``.to``)
                kwargs = {**kwargs, "device": torch.device("meta")}
            elif any(t.device.type != "meta" for t in leaves):
                if func._schema.is_mutable:  # a real accumulator += a meta value: unchanged
                    return args[0]
                args, kwargs = tree_map(_to_meta, (args, kwargs))
        return super().__torch_dispatch__(func, types, args, kwargs)


def _to_meta(x):
    return x.to("meta") if isinstance(x, torch.Tensor) and x.device.type != "meta" else x


class _FlashLike(torch.autograd.Function):
    """What a fused attention kernel allocates and saves for backward: the output and the
    per-row log-sum-exp (float32) forward; gradients of q, k, v backward."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _fused_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, **kw):
    return _FlashLike.apply(query, key, value)


@contextlib.contextmanager
def meta_run() -> Iterator[MetaRun]:
    """Count what the code inside allocates on the meta device (module doc)."""
    from torch.fx.experimental import _config as fx_config

    real = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = _fused_attention
    try:
        # the simulated code's progress bars and warnings are not the job's: kept quiet
        with (
            fx_config.patch(meta_nonzero_assume_all_nonzero=True),
            contextlib.redirect_stderr(io.StringIO()),
            warnings.catch_warnings(),
            MetaRun() as run,
        ):
            warnings.simplefilter("ignore")
            yield run
    finally:
        F.scaled_dot_product_attention = real


def tokens(batch: int, length: int) -> torch.Tensor:
    """Token ids on the meta device."""
    return torch.zeros(batch, length, dtype=torch.long, device="meta")
