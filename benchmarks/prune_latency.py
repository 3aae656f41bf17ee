"""Prefill latency of block-pruned models vs the unpruned one, against (L - n) / L.

Real deletion should make a model with n of L blocks removed cost about (L - n) / L of the
original (a little more: embeddings and the LM head stay).

    .venv/bin/python benchmarks/prune_latency.py [--model smollm2-135m] [--tokens 512]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from layerprune.config import ModelConfig
from layerprune.methods.blocks import last_layers
from layerprune.models.load import load_model
from layerprune.surgery.blocks import remove_blocks


@torch.no_grad()
def prefill_seconds(model, ids: torch.Tensor, repeats: int) -> float:
    model(input_ids=ids, use_cache=False)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(input_ids=ids, use_cache=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--fractions", default="0.25,0.5,0.75")
    args = p.parse_args()

    lm = load_model(ModelConfig(name=args.model, source="asset", id=args.model))
    L = len(lm.adapter.blocks(lm.model))
    ids = torch.randint(100, 10_000, (args.batch, args.tokens))
    print(f"{args.model}: L = {L}, prefill {args.batch} x {args.tokens} tokens")
    for f in map(float, args.fractions.split(",")):
        n = round(f * L)
        model = copy.deepcopy(lm.model)
        remove_blocks(model, lm.adapter, last_layers(L, n).removed_blocks)
        # the unpruned model is timed right before each pruned one: same machine load
        base = prefill_seconds(lm.model, ids, args.repeats)
        t = prefill_seconds(model, ids, args.repeats)
        print(
            f"n = {n:2d}: {t:.3f} s vs unpruned {base:.3f} s, latency ratio {t / base:.3f} "
            f"vs (L-n)/L = {(L - n) / L:.3f}"
        )
        del model


if __name__ == "__main__":
    main()
