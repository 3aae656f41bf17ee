"""Activation memory of healing: bytes saved for backward per token per block, with and
without gradient checkpointing, measured on CPU with ``torch.autograd.graph.saved_tensors_hooks``.

What is counted: every tensor a training forward saves for backward, each storage once (the
hooks keep the tensors alive, so no two live storages share an address), the weights not
counted. Per block: the model built with 2 blocks minus the same model with 1 (the embedding,
the head and the loss cancel).

Two recipes, in the training dtype of the GPU path (``heal/train.py``: bf16 autocast):
- ``lora``: LoRA (rank 64, dropout 0.05, on the MLP projections: ``qlora_gromov``'s adapter)
  on a bf16 base, under bf16 autocast;
- ``qlora``: the same adapter on an nf4 base (bitsandbytes, compute dtype bf16) prepared by
  ``prepare_model_for_kbit_training`` (which casts the norms and embeddings to float32, so
  the residual stream between blocks is float32), under bf16 autocast.

Shapes: a tiny random Llama, SmolLM2-135M, Gemma3-270M and Qwen2.5-0.5B (their config.json from
the asset cache; random weights: activations' sizes do not depend on the values; vocabulary cut
to 32,000), and with ``--big`` Llama-2-7B's shape. Bytes per token: the slope between the
shortest and the longest length. Without checkpointing they are fitted as ``a*h + b*I``
(h hidden, I intermediate) by least squares over the Llama-style shapes (``FIT``), and the fit
is compared with the others; with checkpointing, as a multiple of h. Results:
benchmarks/README.md.

    python benchmarks/activation_memory.py [--seq-lens 128 512 1024] [--json rows.json]
    python benchmarks/activation_memory.py --big --only "llama-2-7b (shape)" --seq-lens 128 256
    python benchmarks/activation_memory.py --from-json rows.json  # the summary again
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, logging

from layerprune import paths
from layerprune.heal.lora import MLP_PROJECTIONS, attach_lora
from layerprune.heal.train import checkpointing
from layerprune.memory.measure import saved_for_backward

ASSETS = ("smollm2-135m", "gemma3-270m", "qwen2.5-0.5b")
LORA = dict(rank=64, alpha=128.0, dropout=0.05, targets=MLP_PROJECTIONS)
FIT = ("smollm2-135m", "qwen2.5-0.5b", "llama-2-7b (shape)")  # Llama-style blocks
PROJECTED = (("Llama-2-7B", 4096, 11008), ("Llama-3-8B / Mistral-7B", 4096, 14336))


def llama_shape(hidden: int, intermediate: int, heads: int, vocab: int) -> LlamaConfig:
    """A Llama config of the given shape (no grouped-query attention)."""
    return LlamaConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        vocab_size=vocab,
        max_position_embeddings=4096,
    )


def with_blocks(config, blocks: int):
    """``config`` with ``blocks`` decoder blocks (and as many per-layer attention types), and
    at most 32,000 tokens of vocabulary: a block's activations do not depend on it, and the
    logits of Gemma3's 262k would dominate the memory of the run."""
    config = type(config).from_dict(config.to_dict())
    config.num_hidden_layers = blocks
    config.vocab_size = min(config.vocab_size, 32000)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):  # ids past the cut
        if isinstance(getattr(config, key, None), int) and getattr(config, key) >= 32000:
            setattr(config, key, None)
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:blocks]
    return config


def build(config, recipe: str, folder: Path) -> torch.nn.Module:
    """The model to train: bf16 base (``lora``) or its nf4 reload (``qlora``), + LoRA."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    if recipe == "qlora":
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        model.save_pretrained(folder)
        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        model = AutoModelForCausalLM.from_pretrained(
            folder, quantization_config=quant, dtype=torch.bfloat16, device_map={"": "cpu"}
        )
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = attach_lora(model, LORA["rank"], LORA["alpha"], LORA["dropout"], LORA["targets"])
    return model.train()


def saved_bytes(model: torch.nn.Module, ids: torch.Tensor, checkpoint: bool) -> int:
    """Bytes one training forward of ``ids`` saves for backward (module doc), under bf16
    autocast as on CUDA, with or without checkpointing."""
    with checkpointing(model, checkpoint), torch.autocast("cpu", dtype=torch.bfloat16):
        return saved_for_backward(model, ids)


def per_block(config, recipe: str, seq_len: int, checkpoint: bool) -> int:
    """Bytes saved per block at ``seq_len`` tokens: the 2-block model minus the 1-block one."""
    ids = torch.randint(0, min(config.vocab_size, 32000), (1, seq_len))
    totals = []
    for blocks in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            model = build(with_blocks(config, blocks), recipe, Path(tmp))
            totals.append(saved_bytes(model, ids, checkpoint))
        del model
    return totals[1] - totals[0]


def per_token(totals: dict[int, int]) -> tuple[float, float]:
    """``(bytes per token, bytes per block independent of length)`` of a block's totals at
    two or more lengths: the slope between the shortest and the longest, and the intercept
    (the bf16 copies autocast makes of the float32 LoRA weights are saved once per block)."""
    short, long = min(totals), max(totals)
    slope = (totals[long] - totals[short]) / (long - short)
    return slope, totals[short] - slope * short


def shapes(big: bool) -> dict[str, object]:
    out = {"tiny-llama": llama_shape(64, 128, 4, 257)}
    for name in ASSETS:
        folder = paths.models_dir() / name
        if (folder / "config.json").exists():
            out[name] = AutoConfig.from_pretrained(folder)
        else:
            print(f"({name}: not in the asset cache, skipped)")
    if big:
        out["llama-2-7b (shape)"] = llama_shape(4096, 11008, 32, 32000)
    return out


def text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def fit(rows: list[dict]) -> tuple[float, float]:
    """Least squares ``bytes = a*h + b*I`` over ``rows`` (exact for two shapes)."""
    x = torch.tensor([[r["h"], r["I"]] for r in rows], dtype=torch.float64)
    y = torch.tensor([[r["off"]] for r in rows], dtype=torch.float64)
    a, b = torch.linalg.lstsq(x, y).solution.flatten().tolist()
    return a, b


def summary(rows: list[dict]) -> None:
    """The fit per recipe over the Llama-style shapes, how far it is off the others, and what
    it gives for 7B / 8B at qlora_gromov's batch (16 x 1024 tokens, 32 blocks)."""
    for recipe in sorted({r["recipe"] for r in rows}):
        mine = [r for r in rows if r["recipe"] == recipe]
        used = [r for r in mine if r["model"] in FIT]
        if len(used) < 2:
            continue
        a, b = fit(used)
        ckpt = max(r["on"] / r["h"] for r in mine)
        print(
            f"{recipe}: {a:.1f}*h + {b:.1f}*I bytes per token per block without checkpointing "
            f"(fitted on {', '.join(r['model'] for r in used)}); {ckpt:.2f}*h with it"
        )
        for r in mine:
            if r["model"] not in FIT:
                off = (a * r["h"] + b * r["I"]) / r["off"] - 1
                print(f"  {r['model']}: the fit is {off:+.1%} off the measured")
        for name, h, inter in PROJECTED:
            tokens, blocks = 16 * 1024, 32
            full = (a * h + b * inter) * tokens * blocks / 1e9
            kept = ckpt * h * tokens * blocks / 1e9
            one = (a * h + b * inter) * tokens / 1e9
            print(
                f"  {name} (h {h}, I {inter}) at 16 x 1024 tokens, 32 blocks: {full:.1f} GB "
                f"without checkpointing; {kept:.1f} GB with it (+ {one:.1f} GB for the block "
                "being recomputed)"
            )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seq-lens", type=int, nargs="+", default=[128, 512, 1024])
    p.add_argument("--recipes", nargs="+", default=["lora", "qlora"])
    p.add_argument("--big", action="store_true", help="also Llama-2-7B's shape (slow, ~3 GB)")
    p.add_argument("--json", type=Path, help="write the rows here")
    p.add_argument("--from-json", type=Path, help="print the summary of rows written before")
    p.add_argument("--only", nargs="+", help="measure these shapes only (names as printed)")
    args = p.parse_args()
    if args.from_json:
        summary(json.loads(args.from_json.read_text()))
        return
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    rows = []
    lens = sorted(args.seq_lens)
    print(
        f"{'model':20s} {'recipe':6s} {'h':>5s} {'I':>6s} "
        + " ".join(f"{'B/tok @' + str(s):>10s}" for s in lens)
        + f" {'B/tok':>8s} {'B/block':>9s} {'ckpt B/tok':>10s} {'/h':>5s} {'ratio':>6s}"
    )
    for name, config in shapes(args.big).items():
        if args.only and name not in args.only:
            continue
        text = text_config(config)
        h, inter = text.hidden_size, text.intermediate_size
        for recipe in args.recipes:
            off = {s: per_block(config, recipe, s, False) for s in lens}
            on = {s: per_block(config, recipe, s, True) for s in lens}
            (slope, fixed), (slope_on, _) = per_token(off), per_token(on)
            row = dict(model=name, recipe=recipe, h=h, I=inter, off=slope, fixed=fixed)
            rows.append({**row, "on": slope_on, "totals": off, "totals_ckpt": on})
            print(
                f"{name:20s} {recipe:6s} {h:5d} {inter:6d} "
                + " ".join(f"{off[s] / s:10,.0f}" for s in lens)
                + f" {slope:8,.0f} {fixed:9,.0f} {slope_on:10,.1f} {slope_on / h:5.2f} "
                f"{slope_on / slope:6.3f}"
            )
    print()
    summary(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
