"""FinerCut search cost, fast vs naive evaluator, on the same model and calibration tokens.

Both run the greedy search for ``--steps`` removals; the script checks that they choose the
same sublayers (discrepancies within 1e-5) and prints wall time, block forwards and the ratios
(target fast / naive <= 0.5).

    .venv/bin/python benchmarks/finercut_search.py --sequences 4 --seq-len 128 --steps 8

``--random-vocab V`` runs a random-weight model with SmolLM2-135M's block shapes (30 blocks,
hidden 576) but a V-token vocabulary and a byte-level tokenizer: with a small V the LM head is
a negligible share of the compute, as on 7B-class models, which shows what the wall-time
ratio becomes when the block forwards dominate.
"""

from __future__ import annotations

import argparse
import time

from layerprune.config import ModelConfig, RandomModelConfig
from layerprune.data.packing import pack
from layerprune.data.text import load_documents
from layerprune.methods.search import FastEvaluator, NaiveEvaluator, candidates, greedy_order
from layerprune.models.load import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--metric", default="js")
    p.add_argument("--sequences", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--random-vocab", type=int, default=0, help="see above; 0 = the real model")
    args = p.parse_args()

    if args.random_vocab:
        shape = RandomModelConfig("llama", 30, 576, 1536, 9, 3, args.random_vocab, 0)
        config = ModelConfig(name="random", source="random", id="random", random=shape)
    else:
        config = ModelConfig(name=args.model, source="asset", id=args.model)
    lm = load_model(config)
    seqs = pack(lm.tokenizer, load_documents("wiki", "calibration"), args.seq_len, 0)
    seqs = seqs[: args.sequences]
    batches = [seqs[i : i + args.batch_size] for i in range(0, len(seqs), args.batch_size)]
    cands = candidates(len(lm.adapter.blocks(lm.model)), "sublayer")
    runs = {}
    for name, cls in (("naive", NaiveEvaluator), ("fast", FastEvaluator)):
        start = time.perf_counter()
        ev = cls(lm.model, lm.adapter, batches, args.metric)
        order = greedy_order(ev, cands, args.steps)
        runs[name] = (order, time.perf_counter() - start, ev.block_forwards)
        print(
            f"{name:5s}: {runs[name][1]:7.1f} s, {ev.block_forwards:8.0f} block forwards, "
            f"order {[f'{c.kind[0]}{c.block}' for c, _ in order]}"
        )
    (a, ta, fa), (b, tb, fb) = runs["naive"], runs["fast"]
    same = [c for c, _ in a] == [c for c, _ in b]
    gap = max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True))
    print(f"identical selections: {same}; max discrepancy difference {gap:.2e}")
    head = lm.model.get_output_embeddings().weight.numel()
    blocks = sum(p.numel() for p in lm.adapter.blocks(lm.model).parameters())
    print(
        f"LM head share of a forward's matmul FLOPs: {head / (head + blocks):.0%} (both evaluators "
        "pay it once per candidate; the fast one saves only block forwards)"
    )
    print(
        f"ratio fast / naive: wall time {tb / ta:.3f}, block forwards {fb / fa:.3f} (target <= 0.5)"
    )


if __name__ == "__main__":
    main()
