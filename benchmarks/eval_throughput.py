"""Shared-prefix scoring vs stock lm-eval (HFLM at its fastest batch size) on the same items.

Stock's batch size is chosen per task: 1, 8, 16 and 32 are timed on the first ``--probe-limit``
items of each task (MMLU: 1 per subject; no batch 32, which ran out of 24 GB) and the fastest
is kept. Then both scorers evaluate the same items. Printed per task and in total: wall time
shared / stock, the accuracies of both, the largest |difference| of any
request's log-likelihood and whether ``is_greedy`` agrees everywhere. No request cache is used.

``--c4-model`` also times ``benchmark=c4_loss`` (perplexity on the held-out C4 split) with the
LM head on the whole ``[batch, context, vocabulary]`` logits (before) and in chunks (after).

    .venv/bin/python benchmarks/eval_throughput.py                      # paper_finercut x 200 + MMLU
    .venv/bin/python benchmarks/eval_throughput.py --limit 20 --c4-model gemma3-270m
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from layerprune.config import ModelConfig
from layerprune.evaluate.harness import TaskResult, evaluate_tasks
from layerprune.evaluate.scorers import SharedScorer, StockScorer
from layerprune.models.load import load_model

CONF = Path(__file__).resolve().parents[1] / "conf" / "benchmark"
BATCH_SIZES = (1, 8, 16, 32)
MMLU_MAX_BATCH = 16  # see fastest_batch_sizes


def suite_tasks(limit: int, mmlu_per_subject: int) -> list[tuple[str, int, int]]:
    """``paper_finercut``'s tasks (0-shot) at ``limit`` items, plus MMLU 5-shot."""
    names = [t["name"] for t in OmegaConf.load(CONF / "paper_finercut.yaml").tasks]
    return [(n, 0, limit) for n in names] + [("mmlu", 5, mmlu_per_subject)]


def accuracies(r: TaskResult) -> dict[str, float]:
    return {
        k.split("/")[1]: v for k, v in r.metrics.items() if k.split("/")[1] in ("acc", "acc_norm")
    }


def fastest_batch_sizes(model, tok, tasks, probe_limit: int) -> dict[str, int]:
    """Per task, the stock batch size of ``BATCH_SIZES`` with the least wall time on a probe.

    MMLU 5-shot skips batch 32: stock pads every row to the longest prompt of its batch, and
    batch 32 was killed for memory on a 24 GB machine (the 16 that fit are kept)."""
    seconds: dict[str, dict[int, float]] = {n: {} for n, _, _ in tasks}
    for bs in BATCH_SIZES:
        probes = [
            (n, shots, 1 if n == "mmlu" else probe_limit)
            for n, shots, _ in tasks
            if not (n == "mmlu" and bs > MMLU_MAX_BATCH)
        ]
        for name, r in evaluate_tasks(StockScorer(batch_size=bs).lm(model, tok), probes).items():
            seconds[name][bs] = r.seconds
            print(f"  probe {name:15s} batch {bs:2d}: {r.seconds:6.1f} s", flush=True)
    return {name: min(by_bs, key=by_bs.get) for name, by_bs in seconds.items()}


def compare_scorers(model, tok, tasks, best: dict[str, int]) -> None:
    """Per task, stock (at its fastest batch size) then shared, back to back: this machine's
    speed drifts by 10-20% over minutes, so each pair is timed close together (lm-eval's task
    index is built once per call, ~15 s, outside the per-task times)."""
    stock: dict[str, TaskResult] = {}
    shared: dict[str, TaskResult] = {}
    for task in tasks:
        name = task[0]
        stock.update(evaluate_tasks(StockScorer(batch_size=best[name]).lm(model, tok), [task]))
        shared.update(evaluate_tasks(SharedScorer().lm(model, tok), [task]))
        print(f"  {name}: stock {stock[name].seconds:.1f} s, shared {shared[name].seconds:.1f} s")
    print(
        f"{'task':15s} {'items':>5s} {'bs':>3s} {'stock s':>8s} {'shared s':>8s} {'ratio':>6s} "
        f"{'acc(/norm) stock':>18s} {'acc(/norm) shared':>18s} {'max|dLL|':>9s} greedy"
    )
    total_stock = total_shared = worst = 0.0
    same_acc = same_greedy = True
    for name, _, _ in tasks:
        a, b = stock[name], shared[name]
        assert len(a.answers) == len(b.answers) == a.requests
        diff = max(abs(x[0] - y[0]) for x, y in zip(a.answers, b.answers, strict=True))
        greedy = all(x[1] == y[1] for x, y in zip(a.answers, b.answers, strict=True))
        acc_a, acc_b = accuracies(a), accuracies(b)
        same_acc &= acc_a == acc_b
        same_greedy &= greedy
        worst = max(worst, diff)
        total_stock += a.seconds
        total_shared += b.seconds
        fmt = lambda acc: "/".join(f"{v:.4f}" for v in acc.values())  # noqa: E731
        print(
            f"{name:15s} {int(a.metrics[f'{name}/n']):5d} {best[name]:3d} {a.seconds:8.1f} "
            f"{b.seconds:8.1f} {b.seconds / a.seconds:6.3f} {fmt(acc_a):>18s} "
            f"{fmt(acc_b):>18s} {diff:9.2e} {'same' if greedy else 'DIFFERS'}",
            flush=True,
        )
    print(
        f"{'total':15s} {'':5s} {'':3s} {total_stock:8.1f} {total_shared:8.1f} "
        f"{total_shared / total_stock:6.3f}   max|dLL| {worst:.2e} "
        f"({'within' if worst <= 1e-4 else 'OVER'} 1e-4); accuracies "
        f"{'identical' if same_acc else 'DIFFER'}; is_greedy {'identical' if same_greedy else 'DIFFERS'}"
    )


def c4_loss_times(model_name: str, tokens: int = 0) -> None:
    """``benchmark=c4_loss`` on ``model_name``: whole logits (head_chunk=0) vs chunked."""
    from layerprune.data.text import load_documents
    from layerprune.evaluate.perplexity import Windows, perplexity, token_stream

    lm = load_model(ModelConfig(name=model_name, source="asset", id=model_name))
    c4 = OmegaConf.load(CONF / "c4_loss.yaml").perplexity[0]
    ids = token_stream(lm.tokenizer, load_documents("c4", "evaluation"), tokens or c4.max_tokens)
    out = {}
    for label, chunk in (("whole logits (before)", 0), ("chunked head (after)", None)):
        kw = {} if chunk is None else {"head_chunk": chunk}
        cpu0, start = time.process_time(), time.perf_counter()
        r = perplexity(lm.model, ids, Windows(c4.context_length, c4.stride, 4), **kw)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        out[label] = (wall, r.loss)
        print(
            f"{model_name} c4_loss, {label}: {wall:.1f} s wall, {cpu:.1f} s CPU, loss {r.loss:.6f}, {r.tokens} tokens",
            flush=True,
        )
    (a, la), (b, lb) = out.values()
    print(
        f"{model_name} c4_loss: after / before = {b / a:.3f}, |loss difference| {abs(la - lb):.2e}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="offline asset name")
    p.add_argument("--limit", type=int, default=200, help="items per 0-shot task")
    p.add_argument("--mmlu-per-subject", type=int, default=2)
    p.add_argument(
        "--probe-limit", type=int, default=16, help="items per task to pick stock's batch size"
    )
    p.add_argument("--stock-batch", default=None, help="task=batch,... instead of the probe")
    p.add_argument("--c4-model", default=None, help="also time c4_loss before/after on this asset")
    p.add_argument("--c4-tokens", type=int, default=0, help="fewer C4 tokens than c4_loss's")
    p.add_argument("--skip-tasks", action="store_true", help="only the c4_loss timing")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)

    if not args.skip_tasks:
        lm = load_model(ModelConfig(name=args.model, source="asset", id=args.model))
        tasks = suite_tasks(args.limit, args.mmlu_per_subject)
        print(
            f"{args.model}, {torch.get_num_threads()} threads; picking stock's batch size",
            flush=True,
        )
        if args.stock_batch:  # e.g. from an earlier probe: "piqa=8,mmlu=1,..."
            best = {k: int(v) for k, v in (kv.split("=") for kv in args.stock_batch.split(","))}
        else:
            best = fastest_batch_sizes(lm.model, lm.tokenizer, tasks, args.probe_limit)
        compare_scorers(lm.model, lm.tokenizer, tasks, best)
    if args.c4_model:
        c4_loss_times(args.c4_model, args.c4_tokens)


if __name__ == "__main__":
    main()
