"""Each model's memory measured alone (issue #41 item 6), at a real model's shape.

Random weights of SmolLM2-135M's shape (``pruning_speed.SHAPES``; timing and memory depend on
the structure only), bf16, the deepest 1/4 of its blocks but the last removed, the pruned and
the unpruned model resident together as the speed stage holds them; placed on one GPU, and
split over the GPU and the CPU (the embedding and the first 3/4 of the blocks on the GPU:
``tests/test_gpu.place``). For each decode batch it prints each model's figure per device
(``speed.own_memory``) and the pruned / unpruned ratio beside the weights' ratio, and, on
CUDA, what the allocator's peak during the decode reads with both models resident (the
figure the speed stage reported before: its ratio reads near 1). No timing: memory only.

    python -m benchmarks.speed_memory                 # cuda:0 (from the repository root)
    python -m benchmarks.speed_memory --device cpu    # the CPU path (tensor bytes), a dry run
"""

from __future__ import annotations

import argparse

import torch
from benchmarks.pruning_speed import SHAPES, model_config, plans
from tests.test_gpu import place

from layerprune.models.load import load_model
from layerprune.speed import own_memory, weight_bytes
from layerprune.speed_cli import speed_settings
from layerprune.surgery.apply import apply_plan

MIB = 2**20


def decode(model: torch.nn.Module, prompt: torch.Tensor, new: int):
    """One greedy decode of exactly ``new`` tokens, as the speed stage times it."""

    def run() -> None:
        with torch.inference_mode():
            model.generate(
                prompt, min_new_tokens=new, max_new_tokens=new, do_sample=False, pad_token_id=0
            )

    return run


def shared_peak(run) -> int:
    """The allocator's peak during ``run`` (every resident model counted)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    run()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m", choices=sorted(SHAPES))
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--placements", nargs="+", default=["one", "split"])
    p.add_argument("overrides", nargs="*", help="speed.KEY=VALUE (default: the paper's sizes)")
    args = p.parse_args()
    sizes = speed_settings("paper", args.overrides)
    cfg = model_config(args.model, True, args.device, args.dtype)
    print(f"{args.model}'s shape, random weights, {args.dtype}, 1/4 of the blocks removed;")
    print(f"decode of {sizes.new_tokens} tokens after {sizes.prompt_length}")
    print(f"{'placement':9s} {'batch':>5s} {'model':9s} {'own MiB per device':36s} {'shared':>8s}")
    for placement in args.placements:
        models = {"pruned": load_model(cfg), "unpruned": load_model(cfg)}
        num_blocks = len(models["pruned"].adapter.blocks(models["pruned"].model))
        apply_plan(
            models["pruned"].model, models["pruned"].adapter, plans(num_blocks)["blocks 1/4"]
        )
        models = {k: place(lm, placement, args.device) for k, lm in models.items()}
        for b in sizes.decode_batches:
            prompt = torch.randint(500, 4000, (b, sizes.prompt_length)).to(args.device)
            tokens = b * (sizes.prompt_length + sizes.new_tokens)
            own, shared = {}, {}
            for name, lm in models.items():
                run = decode(lm.model, prompt, sizes.new_tokens)
                run()  # warm-up: kernels, workspaces
                own[name] = own_memory(lm.model, lm.adapter, run, tokens)
                shared[name] = shared_peak(run) if lm.device.type == "cuda" else 0
                cells = ", ".join(f"{d} {v / MIB:.1f}" for d, v in own[name].items())
                old = f"{shared[name] / MIB:8.1f}" if shared[name] else f"{'-':>8s}"
                print(f"{placement:9s} {b:5d} {name:9s} {cells:36s} {old}")
            total = {k: sum(v.values()) for k, v in own.items()}
            weights = {k: weight_bytes(lm.model) for k, lm in models.items()}
            old = shared["pruned"] / shared["unpruned"] if shared["unpruned"] else float("nan")
            print(
                f"{placement:9s} {b:5d} ratio     own {total['pruned'] / total['unpruned']:.3f}"
                f" (weights {weights['pruned'] / weights['unpruned']:.3f}); shared peak {old:.3f}"
            )
        del models


if __name__ == "__main__":
    main()
