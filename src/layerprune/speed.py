"""What pruning buys: the pruned model's speed, memory and size against the unpruned model's.

Both models are measured in one process, back to back, setting by setting and round by round
(unpruned, pruned, unpruned, pruned, ...), so the *ratios* hold on a noisy machine; absolute
times are only comparable within one run. Timing uses ``torch.utils.benchmark.Timer``
(``blocked_autorange``: its first runs are the warm-up; median and IQR; it synchronises CUDA).
The settings come from the ``speed`` config group (``default``: CPU-sized; ``paper``: the
peers' 512-token prefill and 128 new tokens at batch 16).

- prefill: tokens/s of one forward over ``batch x prefill_length`` tokens (logits of the last
  position only, as generation computes them), for each batch in ``prefill_batches``;
- decode: greedy generation of exactly ``new_tokens`` tokens after a fixed ``prompt_length``
  prompt with the KV cache (``min_new_tokens`` forces the length), for each batch in
  ``decode_batches``: time to first token (a 1-token generate), and decode tokens/s =
  batch x (new_tokens - 1) / (t(new_tokens) - t(1));
- memory: each model's own, measured alone although both are resident, per device it spans
  (``peak_bytes_b<batch>_by_device``; ``peak_bytes_b<batch>`` is their sum): on a CUDA device its
  resident bytes there + the allocator's peak during its decode - what was allocated just
  before (the other model, earlier outputs); on the CPU the tensors' bytes (its weights there +
  the KV cache of its layers there at the end of decode), not the process RSS. A model split
  by ``device_map`` reports each device it spans;
- structure (exact, from the model): parameters, weight bytes, KV-cache bytes per token (a
  layer whose attention was removed holds only its position marker), attention layers, and
  the *ideal* speedups the removed work allows: prefill FLOPs and decode bytes read per token
  (weights except the embedding table, whose one row per token is read, plus the KV cache);
  embeddings and the LM head stay.
"""

from __future__ import annotations

import gc
import logging
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from layerprune.config import SpeedConfig
from layerprune.models.adapter import BlockAdapter

log = logging.getLogger(__name__)

Sizes = SpeedConfig  # the measured settings, as the ``speed`` config group gives them


# -- structure -----------------------------------------------------------------------------


def kv_layer_bytes(model: torch.nn.Module, adapter: BlockAdapter) -> list[int]:
    """Bytes the KV cache holds per token (one sequence), layer by layer: 2 (K, V) x kv heads
    x head size x element size for a layer with attention; 2 elements (its position marker,
    ``surgery/skip.py``) for a layer whose attention was removed."""
    from layerprune.surgery.skip import SkippedAttention

    config = model.config.get_text_config()
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    size = torch.finfo(model.dtype).bits // 8 if model.dtype.is_floating_point else 4
    skipped = [
        isinstance(adapter.attention(model, i), SkippedAttention)
        for i in range(len(adapter.blocks(model)))
    ]
    return [2 * size * (1 if gone else kv_heads * head_dim) for gone in skipped]


def kv_bytes_per_token(model: torch.nn.Module, adapter: BlockAdapter) -> int:
    """Bytes the KV cache holds per token (one sequence), all layers (``kv_layer_bytes``)."""
    return sum(kv_layer_bytes(model, adapter))


def _device_of(t: torch.Tensor) -> torch.device:
    """Where ``t`` is held: the one place that asks (tests place a CPU model on fake devices)."""
    return t.device


def resident_bytes(model: torch.nn.Module) -> dict[torch.device, int]:
    """Bytes of the parameters and buffers held on each device (tied tensors once), in the
    order the model first uses the devices (a ``device_map`` split: the embedding's first)."""
    seen, out = set(), {}
    for t in [*model.parameters(), *model.buffers()]:
        key = (t.device, t.data_ptr()) if t.device.type != "meta" else id(t)  # meta: no storage
        if key not in seen:
            seen.add(key)
            device = _device_of(t)
            out[device] = out.get(device, 0) + t.numel() * t.element_size()
    return out


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the parameters and buffers held (tied tensors once), all devices."""
    return sum(resident_bytes(model).values())


def kv_bytes_by_device(model: torch.nn.Module, adapter: BlockAdapter) -> dict[torch.device, int]:
    """``kv_layer_bytes`` summed per device: a layer's cache is made where its block runs."""
    out: dict[torch.device, int] = {}
    for block, size in zip(adapter.blocks(model), kv_layer_bytes(model, adapter), strict=True):
        device = _device_of(next(block.parameters()))  # its norms, whatever was removed
        out[device] = out.get(device, 0) + size
    return out


def structure(model: torch.nn.Module, adapter: BlockAdapter) -> dict[str, Any]:
    """Exact figures of ``model``'s structure (module doc), and per-token work for the ideal
    speedups: ``flops_per_token`` (2 x the parameters a token multiplies: every linear layer,
    the LM head included, not the embedding lookup) and ``bytes_per_token`` (the weights a
    decode step reads: all but the embedding table, unless it is tied to the head)."""
    from layerprune.models.load import count_parameters
    from layerprune.surgery.skip import SkippedAttention

    blocks = adapter.blocks(model)
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    tied = embed.data_ptr() == head.data_ptr()
    params = count_parameters(model)
    # every linear layer once; the LM head is one of them, tied to the embedding or not
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    read = weight_bytes(model) - (0 if tied else embed.numel() * embed.element_size())
    attention = sum(
        not isinstance(adapter.attention(model, i), SkippedAttention) for i in range(len(blocks))
    )
    config = model.config.get_text_config()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return {
        "params": params,
        "weight_bytes": weight_bytes(model),
        "kv_bytes_per_token": kv_bytes_per_token(model, adapter),
        "blocks": len(blocks),
        "attention_layers": attention,
        "attention_width": config.num_attention_heads * head_dim,  # query heads x head size
        "flops_per_token": 2 * matmul,
        "head_flops_per_token": 2 * head.numel(),  # prefill runs the head on its last position
        "bytes_per_token": read,
    }


def ideal(pruned: dict, unpruned: dict, sizes: Sizes) -> dict[str, float]:
    """The speedups the removed work allows: prefill by FLOPs (the blocks' matmuls + attention
    scores at the prefill length; the head once per sequence), decode by bytes read per step
    (weights + the KV cache at the middle of the generated span)."""

    def prefill_flops(s: dict) -> float:
        # q.k and p.v over the keys before each token: on average half the prefill length;
        # the LM head only on the last position of a sequence
        scores = 4 * s["attention_layers"] * (sizes.prefill_length / 2) * s["attention_width"]
        head = s["head_flops_per_token"] * (1 - 1 / sizes.prefill_length)
        return s["flops_per_token"] - head + scores

    length = sizes.prompt_length + sizes.new_tokens / 2
    out = {"prefill": prefill_flops(unpruned) / prefill_flops(pruned)}
    for b in sizes.decode_batches:
        read = {
            k: s["bytes_per_token"] + b * length * s["kv_bytes_per_token"]
            for k, s in (("u", unpruned), ("p", pruned))
        }
        out[f"decode_b{b}"] = read["u"] / read["p"]
    return out


# -- timing --------------------------------------------------------------------------------


@dataclass
class Timing:
    median: float  # seconds
    iqr: float

    @classmethod
    def of(cls, fn, min_run_time: float) -> Timing:
        """``blocked_autorange``: its first runs size the blocks (the warm-up), then blocks
        until ``min_run_time`` has passed."""
        from torch.utils.benchmark import Timer

        m = Timer(
            stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()
        ).blocked_autorange(min_run_time=min_run_time)
        return cls(m.median, m.iqr)


class _Bench:
    """The settings' statements for one model."""

    def __init__(self, model: torch.nn.Module, vocab: int, device: torch.device):
        self.model, self.vocab, self.device = model, vocab, device
        self.gen = torch.Generator().manual_seed(0)

    def ids(self, batch: int, length: int) -> torch.Tensor:
        low = min(1000, self.vocab - 1)  # ordinary tokens, away from special ids
        ids = torch.randint(low // 2, self.vocab, (batch, length), generator=self.gen)
        return ids.to(self.device)

    def prefill(self, ids: torch.Tensor):
        def run():
            with torch.inference_mode():
                self.model(input_ids=ids, use_cache=True, logits_to_keep=1)

        return run

    def generate(self, ids: torch.Tensor, new: int):
        mask = torch.ones_like(ids)

        def run():
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    min_new_tokens=new,
                    max_new_tokens=new,
                    do_sample=False,
                    pad_token_id=0,
                )
            assert out.shape[1] == ids.shape[1] + new  # forced length

        return run


NOISY_SPREAD = 0.15


def round_spread(medians: list[float]) -> float:
    """Slowest round / fastest round - 1: how far the rounds of one timing disagree. On an idle
    machine it stays within a few percent; a busy one shows here before it shows in a ratio."""
    return max(medians) / min(medians) - 1


def measure(pruned: torch.nn.Module, unpruned: torch.nn.Module, sizes: Sizes) -> dict:
    """Every setting for both models, alternating (module doc): ``{"unpruned": {...},
    "pruned": {...}}`` of medians (s), IQRs, tokens/s and peak bytes."""
    device = next(pruned.parameters()).device
    vocab = pruned.config.get_text_config().vocab_size
    benches = {"unpruned": _Bench(unpruned, vocab, device), "pruned": _Bench(pruned, vocab, device)}
    ref = benches["unpruned"]
    out: dict[str, dict] = {"unpruned": {}, "pruned": {}}
    settings = len(sizes.prefill_batches) + 2 * len(sizes.decode_batches)
    bar = tqdm(total=settings * sizes.rounds * 2, desc="speed", unit="timing")

    def record(key: str, make, tokens: int) -> None:
        runs = {name: [] for name in benches}
        for _ in range(sizes.rounds):
            for name, bench in benches.items():
                runs[name].append(Timing.of(make(bench), sizes.min_run_time))
                bar.update()
        for name, timings in runs.items():
            t = statistics.median(x.median for x in timings)
            out[name][f"{key}_s"] = t
            out[name][f"{key}_iqr_s"] = statistics.median(x.iqr for x in timings)
            spread = round_spread([x.median for x in timings])
            out[name][f"{key}_round_spread"] = spread
            if spread > NOISY_SPREAD:
                log.warning(
                    "%s of the %s model: its rounds disagree by %.0f%% (the machine was busy?);"
                    " its ratio is noisy, rerun alone or with more speed.rounds",
                    key,
                    name,
                    100 * spread,
                )
            if tokens:
                out[name][f"{key}_tokens_per_s"] = tokens / t

    for b in sizes.prefill_batches:
        ids = ref.ids(b, sizes.prefill_length)
        record(f"prefill_b{b}", lambda bench, ids=ids: bench.prefill(ids), b * sizes.prefill_length)
    for b in sizes.decode_batches:
        prompt = ref.ids(b, sizes.prompt_length)
        record(f"ttft_b{b}", lambda bench, p=prompt: bench.generate(p, 1), 0)
        record(f"generate_b{b}", lambda bench, p=prompt: bench.generate(p, sizes.new_tokens), 0)
        for name in benches:
            o = out[name]
            span = o[f"generate_b{b}_s"] - o[f"ttft_b{b}_s"]
            o[f"decode_b{b}_tokens_per_s"] = b * (sizes.new_tokens - 1) / max(span, 1e-9)
            by_device = _peak(benches[name], prompt, sizes.new_tokens)
            o[f"peak_bytes_b{b}"] = sum(by_device.values())
            o[f"peak_bytes_b{b}_by_device"] = by_device
    bar.close()
    return out


def _peak(bench: _Bench, prompt: torch.Tensor, new: int) -> dict[str, int]:
    """The model's own bytes per device during one decode of ``new`` tokens after ``prompt``."""
    adapter = BlockAdapter.for_model(bench.model)
    tokens = prompt.shape[0] * (prompt.shape[1] + new)
    return own_memory(bench.model, adapter, bench.generate(prompt, new), tokens)


def own_memory(
    model: torch.nn.Module, adapter: BlockAdapter, decode: Callable[[], None], tokens: int
) -> dict[str, int]:
    """Bytes ``model`` needs on each device it spans to run ``decode`` (which ends with
    ``tokens`` tokens in its KV cache), as if it were alone there (module doc). On CUDA: its
    resident bytes there + (the allocator's peak during ``decode`` - what was allocated just
    before): whatever else is resident (the other model of the comparison) cancels out. On
    the CPU: its resident bytes there + its layers' KV cache there, from the structure."""
    resident = resident_bytes(model)
    cuda = [d for d in resident if d.type == "cuda"]
    gc.collect()
    before = {}
    for d in cuda:
        torch.cuda.synchronize(d)
        before[d] = torch.cuda.memory_allocated(d)
        torch.cuda.reset_peak_memory_stats(d)
    decode()
    kv = kv_bytes_by_device(model, adapter)
    out = {}
    for d, held in resident.items():
        if d.type == "cuda":
            torch.cuda.synchronize(d)
            out[str(d)] = held + int(torch.cuda.max_memory_allocated(d)) - before[d]
        else:
            out[str(d)] = held + tokens * kv.get(d, 0)
    return out


def speed_report(
    pruned: torch.nn.Module, unpruned: torch.nn.Module, sizes: Sizes, adapters: tuple
) -> dict[str, Any]:
    """``results.json``'s ``speed`` block: each figure for both models, the ratios
    (pruned / unpruned: > 1 is faster for tokens/s, < 1 is smaller for bytes and times), the
    ideal speedups, the device and the sizes."""
    structures = {
        "pruned": structure(pruned, adapters[0]),
        "unpruned": structure(unpruned, adapters[1]),
    }
    timed = (
        measure(pruned, unpruned, sizes) if sizes.prefill_batches or sizes.decode_batches else None
    )
    models = {k: {**structures[k], **((timed or {}).get(k, {}))} for k in structures}
    ratios = {
        k: models["pruned"][k] / models["unpruned"][k]
        for k in models["pruned"]
        if isinstance(models["pruned"][k], int | float)
        and models["unpruned"].get(k)
        and not k.endswith("_round_spread")
    }
    device = next(pruned.parameters()).device
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "devices": [str(d) for d in resident_bytes(pruned)],  # a split model: several
        "threads": torch.get_num_threads(),
        "dtype": str(pruned.dtype),
        "sizes": asdict(sizes),
        "pruned": models["pruned"],
        "unpruned": models["unpruned"],
        "ratios": ratios,
        "ideal": ideal(structures["pruned"], structures["unpruned"], sizes),
    }


def summary(speed: dict) -> str:
    """One line for the terminal: ``decode b1 1.31x faster, KV cache 0.73x, weights 0.78x``."""
    r = speed["ratios"]
    parts = []
    for key in sorted(k for k in r if k.startswith("decode_b") and k.endswith("tokens_per_s")):
        parts.append(f"{key.split('_')[0]} {key.split('_')[1]} {r[key]:.2f}x faster")
    for key in sorted(k for k in r if k.startswith("prefill_b") and k.endswith("tokens_per_s"))[:1]:
        parts.append(f"prefill {key.split('_')[1]} {r[key]:.2f}x faster")
    parts.append(f"KV cache {r['kv_bytes_per_token']:.2f}x")
    parts.append(f"weights {r['weight_bytes']:.2f}x")
    return ", ".join(parts)
