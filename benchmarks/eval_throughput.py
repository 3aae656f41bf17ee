"""Requests/s of our evaluation (batched, in-memory model) vs lm-eval's default batch size 1.

Same model object, same items, one process. Prints every batch size tried and the ratio of the
default (``batch_size=0``: 16 on CPU, ``auto`` on CUDA) over batch 1.

    .venv/bin/python benchmarks/eval_throughput.py --task arc_easy --limit 60
"""

from __future__ import annotations

import argparse
import logging

from layerprune.config import ModelConfig
from layerprune.evaluate.harness import evaluate_tasks
from layerprune.models.load import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="offline asset name")
    p.add_argument("--task", default="arc_easy")
    p.add_argument("--limit", type=int, default=60)
    p.add_argument("--batch-sizes", default="1,4,16,32", help="also tried, besides 1 and default")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    lm = load_model(ModelConfig(name=args.model, source="asset", id=args.model))
    evaluate_tasks(lm.model, lm.tokenizer, [(args.task, 0, 4)])  # warm-up: task build, caches
    rates: dict[str, float] = {}
    accs: dict[str, float] = {}
    for bs in ["1", *[b for b in args.batch_sizes.split(",") if b != "1"], "0"]:
        r = evaluate_tasks(lm.model, lm.tokenizer, [(args.task, 0, args.limit)], batch_size=int(bs))
        res = r[args.task]
        label = "default" if bs == "0" else f"batch {bs}"
        rates[label] = res.requests / res.seconds
        accs[label] = res.metrics[f"{args.task}/acc"]
        print(
            f"{label:10s} {res.requests} requests in {res.seconds:6.1f} s = "
            f"{rates[label]:6.2f} req/s, acc {accs[label]:.4f}"
        )
    assert len(set(accs.values())) == 1, f"batching changed accuracy: {accs}"
    print(f"ratio default / batch 1 = {rates['default'] / rates['batch 1']:.2f}x")


if __name__ == "__main__":
    main()
