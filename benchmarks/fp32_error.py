"""How far float32 scoring is from float64, beside how far shared is from stock.

Issue #13 asks shared-prefix log-likelihoods to equal stock HFLM's to 1e-4. Both run the model
in float32, in calls of different shapes, so they round differently. This script takes the
requests where the two differ most and scores each again in float64, one request per call. It
prints how far each float32 answer is from the float64 one, so the 1e-4 bound can be read
against the rounding error both scorers share.

    .venv/bin/python benchmarks/fp32_error.py                       # piqa, hellaswag x 200
    .venv/bin/python benchmarks/fp32_error.py --tasks piqa --limit 50 --worst 5
"""

from __future__ import annotations

import argparse
import copy

import torch

from layerprune.config import ModelConfig
from layerprune.evaluate.harness import evaluate_tasks
from layerprune.evaluate.prefix_plan import Request, to_request
from layerprune.evaluate.scorers import SharedScorer, StockScorer
from layerprune.evaluate.shared_prefix import SharedPrefixLM
from layerprune.models.load import load_model


@torch.no_grad()
def continuation_logprob(model: torch.nn.Module, req: Request) -> float:
    """Sum of log p(continuation) from one unpadded forward of stock's input, in the model's
    dtype."""
    n = len(req.targets)
    logp = torch.log_softmax(model(torch.tensor([req.inp])).logits[0, -n:], dim=-1)
    return float(logp.gather(-1, torch.tensor(req.targets)[:, None]).sum(dtype=torch.float64))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="offline asset name")
    p.add_argument("--tasks", default="piqa,hellaswag")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--stock-batch", type=int, default=8)
    p.add_argument("--worst", type=int, default=3, help="requests per task scored in float64")
    args = p.parse_args()

    lm = load_model(ModelConfig(name=args.model, source="asset", id=args.model))
    model, tok = lm.model, lm.tokenizer
    tasks = [(t, 0, args.limit) for t in args.tasks.split(",")]
    stock = evaluate_tasks(StockScorer(batch_size=args.stock_batch).lm(model, tok), tasks)
    shared = evaluate_tasks(SharedScorer().lm(model, tok), tasks)
    model64 = copy.deepcopy(model).double()
    encoder = SharedPrefixLM(pretrained=model, tokenizer=tok, batch_size=1, device="cpu")
    print(
        f"{'task':10s} {'req':>4s} {'tokens':>6s} {'LL fp64':>10s} {'stock-shared':>12s} "
        f"{'stock-fp64':>10s} {'shared-fp64':>11s} {'fp32 alone-fp64':>15s}"
    )
    for name, _, _ in tasks:
        a, b = stock[name].answers, shared[name].answers
        gaps = [abs(x[0] - y[0]) for x, y in zip(a, b, strict=True)]
        for i in sorted(range(len(gaps)), key=gaps.__getitem__, reverse=True)[: args.worst]:
            context, continuation = stock[name].arguments[i]
            req = to_request(i, *encoder._encode_pair(context, continuation), encoder.max_length)
            truth = continuation_logprob(model64, req)
            fp32 = continuation_logprob(model, req)
            print(
                f"{name:10s} {i:4d} {len(req.targets):6d} {truth:10.4f} {a[i][0] - b[i][0]:12.2e} "
                f"{a[i][0] - truth:10.2e} {b[i][0] - truth:11.2e} {fp32 - truth:15.2e}",
                flush=True,
            )


if __name__ == "__main__":
    main()
