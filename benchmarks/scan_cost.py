"""Scan wall time / plain forward wall time on the same calibration batches (target <= 1.10).

The plain forward is ``model(input_ids, attention_mask)`` (what any evaluation pays); the scan
is one forward through the blocks with hooks plus the distance arithmetic, no LM head.

    .venv/bin/python benchmarks/scan_cost.py [--model smollm2-135m] [--sequences 32]
"""

from __future__ import annotations

import argparse
import time

import torch

from layerprune.config import ModelConfig
from layerprune.data.calibration import batches, calibration_sequences
from layerprune.data.text import load_documents
from layerprune.models.load import load_model
from layerprune.scan.residual import scan_model


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--sequences", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    lm = load_model(ModelConfig(name=args.model, source="asset", id=args.model))
    docs = load_documents("c4", "calibration")
    seqs = calibration_sequences(lm.tokenizer, docs, args.sequences, args.seq_len, 0)
    data = batches(seqs, args.batch_size, lm.tokenizer.pad_token_id)

    @torch.no_grad()
    def forward():
        for b in data:
            lm.model(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False)

    forward()  # warm-up
    t_forward = t_scan = float("inf")
    for _ in range(args.repeats):  # alternate, so a change in machine load hits both
        t_forward = min(t_forward, best_of(1, forward))
        t_scan = min(
            t_scan, best_of(1, lambda: scan_model(lm.model, lm.adapter, data, progress=False))
        )
    tokens = sum(len(s) for s in seqs)
    print(f"{args.model}: {len(seqs)} sequences, {tokens} tokens, batch {args.batch_size}")
    print(f"plain forward {t_forward:.2f} s, scan {t_scan:.2f} s (best of {args.repeats})")
    print(f"ratio scan / forward = {t_scan / t_forward:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
