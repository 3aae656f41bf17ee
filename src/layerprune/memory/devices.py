"""How much memory a device has: named devices (``layerprune-memory device=...``) and the
devices of this machine (preflight).

Named GPUs give the total memory torch reports for one card (``total_memory``); a CUDA
process also holds its context and library workspaces outside the allocator, so
``usable`` keeps ``CUDA_RESERVED`` of each GPU back. CPU capacity is what the kernel calls
available (``MemAvailable``), or the named size.
"""

from __future__ import annotations

from dataclasses import dataclass

GiB = 2**30
CUDA_RESERVED = 1 * GiB  # CUDA context, cuBLAS / cuDNN workspaces: outside the allocator


@dataclass(frozen=True)
class Device:
    """``count`` devices of ``total`` bytes each, of ``kind`` cuda or cpu."""

    name: str
    kind: str
    total: int
    count: int = 1

    @property
    def usable(self) -> int:
        """Bytes per device the job's tensors can have."""
        return self.total - (CUDA_RESERVED if self.kind == "cuda" else 0)

    def describe(self) -> str:
        each = f"{self.usable / 1e9:.1f} GB usable"
        return f"{self.count} x {self.name} ({each})" if self.count > 1 else f"{self.name} ({each})"


NAMED = {  # torch.cuda.get_device_properties(i).total_memory of each card
    "a100-40gb": ("cuda", int(39.39 * GiB)),
    "a100-80gb": ("cuda", int(79.15 * GiB)),
    "h100-80gb": ("cuda", int(79.19 * GiB)),
    "h200-141gb": ("cuda", int(139.8 * GiB)),
    "l40s-48gb": ("cuda", int(44.39 * GiB)),
    "rtx4090-24gb": ("cuda", int(23.64 * GiB)),
    "cpu-24gb": ("cpu", 24 * GiB),
    "cpu-64gb": ("cpu", 64 * GiB),
    "cpu-128gb": ("cpu", 128 * GiB),
}


def named(name: str, count: int = 1) -> Device:
    """A named device (``NAMED``), ``count`` of them."""
    from layerprune.errors import LayerpruneError

    if name not in NAMED:
        raise LayerpruneError(f"device={name}: unknown; one of {sorted(NAMED)}")
    kind, total = NAMED[name]
    return Device(name, kind, total, count)


def available_ram() -> int:
    """``MemAvailable`` of /proc/meminfo (bytes); total RAM where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def local_cuda(indices: list[int]) -> Device:
    """The visible GPUs ``indices`` (the smallest one's size for all)."""
    import torch

    props = [torch.cuda.get_device_properties(i) for i in indices]
    return Device(props[0].name, "cuda", min(p.total_memory for p in props), len(props))


def local_cpu() -> Device:
    return Device("cpu (available RAM)", "cpu", available_ram())
