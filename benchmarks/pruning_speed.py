"""What pruning buys, measured against the ideal (issue #30): block-pruned models at 1/4 and
1/2 of their blocks, and attention-only removal (FinerCut's granularity=attention at 1/4 of
the 2L sublayers: the attention of L/2 blocks), each against its unpruned model in this
process, back to back (``speed.py``), at the speed group's sizes (default: ``paper``).

Speed depends on the structure, not on which blocks a method picks: the blocks removed here
are the deepest but the last (``last_layers``'s choice), the attention the deepest L/2.

    python benchmarks/pruning_speed.py --models smollm2-135m qwen2.5-0.5b --speed paper
    python benchmarks/pruning_speed.py --random --device cuda --dtype bfloat16   # no assets

``--random`` builds random-weight models of the same shapes (SHAPES; untied head): timing
depends on the structure only, so a GPU machine without the offline assets measures them too.
"""

from __future__ import annotations

import argparse

import torch

from layerprune.config import ModelConfig, RandomModelConfig
from layerprune.models.load import load_model
from layerprune.plan import PruningPlan
from layerprune.speed import speed_report
from layerprune.speed_cli import speed_settings
from layerprune.surgery.apply import apply_plan

SHAPES = {  # the offline models' shapes, for --random
    "smollm2-135m": RandomModelConfig("llama", 30, 576, 1536, 9, 3, 49152),
    "qwen2.5-0.5b": RandomModelConfig("qwen2", 24, 896, 4864, 14, 2, 151936),
}


def model_config(name: str, random: bool, device: str, dtype: str) -> ModelConfig:
    if random:
        return ModelConfig(
            name, source="random", id=name, random=SHAPES[name], dtype=dtype, device=device
        )
    return ModelConfig(name=name, source="asset", id=name, dtype=dtype, device=device)


def plans(num_blocks: int) -> dict[str, PruningPlan]:
    def blocks(fraction: float) -> list[int]:
        n = int(fraction * num_blocks + 0.5)
        return list(range(num_blocks - 1 - n, num_blocks - 1))

    half = num_blocks // 2
    attention = list(range(num_blocks - 1 - half, num_blocks - 1))
    return {
        "blocks 1/4": PruningPlan("x", removed_blocks=blocks(0.25), num_candidates=num_blocks),
        "blocks 1/2": PruningPlan("x", removed_blocks=blocks(0.5), num_candidates=num_blocks),
        "attention 1/4 of 2L": PruningPlan("x", removed_attention=attention),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", nargs="+", default=["smollm2-135m", "qwen2.5-0.5b"])
    p.add_argument("--speed", default="paper")
    p.add_argument("--random", action="store_true", help="random weights of the same shapes")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--variants", nargs="+", help="a subset, e.g. 'attention 1/4 of 2L'")
    p.add_argument("overrides", nargs="*", help="speed.KEY=VALUE")
    args = p.parse_args()
    torch.set_num_threads(2)
    settings = speed_settings(args.speed, args.overrides)
    print(f"sizes: {settings}")
    for name in args.models:
        cfg = model_config(name, args.random, args.device, args.dtype)
        ref = load_model(cfg)
        num_blocks = len(ref.adapter.blocks(ref.model))
        print(f"\n{name} ({num_blocks} blocks, {ref.dtype}, {torch.get_num_threads()} threads)")
        head = f"{'variant':22s} {'kind':20s} {'measured':>9s} {'ideal':>7s} {'meas/ideal':>10s}"
        print(head)
        variants = plans(num_blocks)
        unknown = set(args.variants or ()) - set(variants)
        if unknown:
            raise SystemExit(f"unknown variants {sorted(unknown)}; known: {sorted(variants)}")
        for label, plan in variants.items():
            if args.variants and label not in args.variants:
                continue
            pruned = load_model(cfg)
            apply_plan(pruned.model, pruned.adapter, plan)
            s = speed_report(pruned.model, ref.model, settings, (pruned.adapter, ref.adapter))
            r, ideal = s["ratios"], s["ideal"]
            for b in settings.prefill_batches:
                m = r[f"prefill_b{b}_tokens_per_s"]
                i = ideal["prefill"]
                print(f"{label:22s} {f'prefill b{b}':20s} {m:9.3f} {i:7.3f} {m / i:10.3f}")
            for b in settings.decode_batches:
                m, i = r[f"decode_b{b}_tokens_per_s"], ideal[f"decode_b{b}"]
                print(f"{label:22s} {f'decode b{b}':20s} {m:9.3f} {i:7.3f} {m / i:10.3f}")
                ttft = 1 / r[f"ttft_b{b}_s"]
                print(f"{label:22s} {f'1 / ttft b{b}':20s} {ttft:9.3f}")
            kv, w = r["kv_bytes_per_token"], r["weight_bytes"]
            print(f"{label:22s} {'KV bytes / weights':20s} {kv:9.3f} {w:7.3f}")
            del pruned


if __name__ == "__main__":
    main()
