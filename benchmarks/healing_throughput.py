"""Healing throughput: tokens/s of CE-LoRA, KD-LoRA (teacher on the fly) and KD-LoRA with the
teacher's top-k log-probabilities cached, on SmolLM2-135M-Instruct with 8 of its 30 blocks
removed; and the evaluation time of a LoRA-healed model merged vs through its adapter.

Each healer trains a fresh student for ``--steps`` steps of ``--batch`` x 256 tokens; the
three alternate for ``--rounds`` rounds (so machine noise hits them alike) and the median
tokens/s is reported with its ratio to CE-LoRA. The top-k file is built once (its time and
size are reported apart: a sweep pays it once per base model and text).

    python benchmarks/healing_throughput.py --steps 6 --rounds 2
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from functools import partial
from pathlib import Path

import torch

from layerprune.config import ModelConfig
from layerprune.data.packing import pack
from layerprune.data.text import load_documents
from layerprune.heal.base import HealingText
from layerprune.heal.kd import KD, teacher_topk
from layerprune.heal.lora import LoRA
from layerprune.job import JobState
from layerprune.models.load import load_model
from layerprune.plan import PruningPlan
from layerprune.speed import weight_bytes
from layerprune.surgery.apply import apply_plan

MODEL = ModelConfig(name="smollm2-135m", source="asset", id="smollm2-135m")
PLAN = PruningPlan("last_layers", removed_blocks=list(range(21, 29)), num_candidates=30)


def job(tmp: Path) -> JobState:
    state = JobState(tmp, 0, 0.25, partial(load_model, MODEL))
    state.lm = state.loader()
    state.num_blocks = 30
    state.plan = PLAN
    apply_plan(state.lm.model, state.lm.adapter, PLAN)
    state.model = state.lm.model
    return state


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--topk", type=int, default=64)
    p.add_argument("--rows", type=int, default=96, help="sequences of 256 tokens trained on")
    p.add_argument("--out", type=Path, default=Path("/tmp/healing_throughput"))
    args = p.parse_args()
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    common = dict(steps=args.steps, batch_size=args.batch, warmup_steps=1, checkpoint_every=0)
    healers = {
        "CE-LoRA": LoRA(**common),
        "KD-LoRA": KD(**common),
        f"KD-LoRA top-{args.topk} cached": KD(**common, teacher_topk=args.topk),
    }
    base = job(args.out)
    # the first --rows sequences of the C4 healing split (the cache is per text: a sweep
    # builds it once for the whole split)
    tokens = pack(base.lm.tokenizer, load_documents("c4", "healing"), 256, 0)[: args.rows]
    text = HealingText(tokens, "c4/healing")
    start = time.perf_counter()
    logp, _ = teacher_topk(base, text, 1.0, args.topk)
    built = time.perf_counter() - start
    mass = float(logp.exp().sum(-1).mean())
    print(
        f"teacher top-{args.topk}: {tokens.numel():,} tokens in {built:.1f} s "
        f"({tokens.numel() / built:.0f} tokens/s; a cache hit if already built), "
        f"{logp.numel() * 8 / 2**20:.1f} MiB, mean top-k mass {mass:.4f}"
    )
    teacher = load_model(MODEL).model
    print(f"teacher weights: {weight_bytes(teacher) / 2**20:.1f} MiB (float32)")
    del teacher

    rates: dict[str, list[float]] = {name: [] for name in healers}
    for r in range(args.rounds):
        for name, healer in healers.items():
            state = job(args.out)
            model = healer.student(state)
            healer.prepare(state, text)
            result = healer.train(model, text, args.out / "loss.csv")
            rates[name].append(result.tokens_per_s)
            print(f"round {r + 1} {name}: {result.tokens_per_s:.1f} tokens/s")
    ce = statistics.median(rates["CE-LoRA"])
    print(f"\n{'healer':32s} {'tokens/s':>9s} {'x CE':>6s}  cost per token x CE")
    for name, values in rates.items():
        m = statistics.median(values)
        print(f"{name:32s} {m:9.1f} {m / ce:6.3f}  {ce / m:.3f}")

    # evaluation: the LoRA-healed model merged vs through its adapter, back to back
    from layerprune.evaluate.perplexity import Windows, perplexity, token_stream

    state = job(args.out)
    healer = LoRA(**{**common, "steps": 2})
    adapter = healer.student(state)  # peft: LoRA layers beside the frozen weights
    healer.train(adapter, text, args.out / "loss.csv")
    merged = copy.deepcopy(adapter).merge_and_unload()  # what healing evaluates by default
    ids = token_stream(state.lm.tokenizer, load_documents("c4", "evaluation"), 8192)
    times: dict[str, list[float]] = {"adapter": [], "merged": []}
    for _ in range(args.rounds):
        for name, model in (("adapter", adapter), ("merged", merged)):
            t = time.perf_counter()
            perplexity(model, ids, Windows(1024, 1024, 4))
            times[name].append(time.perf_counter() - t)
    a, m = (statistics.median(times[k]) for k in ("adapter", "merged"))
    print(
        f"\nC4 loss on 8k tokens: adapter {a:.1f} s, merged {m:.1f} s, merged / adapter {m / a:.3f}"
    )


if __name__ == "__main__":
    main()
