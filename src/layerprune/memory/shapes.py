"""A job's model on the meta device, from its config alone: exact parameter shapes, no weights.

The config comes from where the job would load it: an asset or local folder's
``config.json``, the random spec (tests), a Hub model's bundled ``config.json``
(``models/shapes/``: the public values of the models ``conf/model`` names, so no Hub is
needed), else ``AutoConfig`` from the Hub cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from layerprune import paths
from layerprune.config import ModelConfig, ModelSource
from layerprune.errors import LayerpruneError

SHAPES_DIR = Path(__file__).resolve().parents[1] / "models" / "shapes"


def bundled_config(hub_id: str) -> dict | None:
    """The bundled ``config.json`` of a Hub model (``org/name``), if there is one."""
    file = SHAPES_DIR / (hub_id.replace("/", "--") + ".json")
    return json.loads(file.read_text()) if file.exists() else None


def config_dict(cfg: ModelConfig) -> dict:
    """The model's ``config.json`` values (module doc), or one line saying why not."""
    if cfg.source == ModelSource.random:
        return {"random": json.dumps(_asdict(cfg.random), sort_keys=True)}
    if cfg.source == ModelSource.hub:
        found = bundled_config(cfg.id)
        if found is not None:
            return found
        try:
            from transformers import AutoConfig

            return AutoConfig.from_pretrained(
                cfg.id, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
            ).to_dict()
        except Exception as e:
            raise LayerpruneError(
                f"no config for {cfg.id} without the Hub ({str(e).splitlines()[0]}); "
                f"bundled: {sorted(p.stem.replace('--', '/') for p in SHAPES_DIR.glob('*.json'))}"
            ) from e
    folder = paths.models_dir() / cfg.id if cfg.source == ModelSource.asset else Path(cfg.id)
    file = folder.expanduser() / "config.json"
    if not file.exists():
        raise LayerpruneError(f"no config.json in {file.parent}: the model's shapes are unknown")
    return json.loads(file.read_text())


def _asdict(spec) -> dict:
    from dataclasses import asdict

    return asdict(spec)


def meta_model(config: dict, dtype: torch.dtype) -> torch.nn.Module:
    """The causal LM of ``config`` on the meta device, in ``dtype``, sdpa attention."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if "random" in config:
        from layerprune.config import RandomModelConfig
        from layerprune.models.random_model import random_model

        with torch.device("meta"):
            return random_model(RandomModelConfig(**json.loads(config["random"])), dtype)
    values = {k: v for k, v in config.items() if k not in ("architectures", "auto_map")}
    hf = AutoConfig.for_model(**values)
    hf._attn_implementation = "sdpa"
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf, dtype=dtype)
    return model.eval()


@dataclass(frozen=True)
class Shapes:
    """What the memory model reads off the meta model: bytes per part at the model's dtype
    (``block``: each block's parameters; ``block_linear``: elements of its linear weights,
    the part nf4 stores at 4 bits) and the attention / vocabulary sizes."""

    blocks: int
    block_bytes: tuple[int, ...]
    attention_bytes: tuple[int, ...]  # the attention sublayer's share of each block
    block_linear: tuple[int, ...]  # elements of linear weights per block
    other_bytes: int  # embeddings, head (once if tied), final norm, buffers
    hidden: int
    vocab: int
    kv_bytes_per_token: int  # K and V of every block, one token
    dtype_bytes: int

    @property
    def weight_bytes(self) -> int:
        return sum(self.block_bytes) + self.other_bytes


def shapes_of(model: torch.nn.Module) -> Shapes:
    """``Shapes`` of a (meta) model."""
    from layerprune.models.adapter import BlockAdapter

    adapter = BlockAdapter.for_model(model)
    blocks = adapter.blocks(model)
    seen: set[int] = set()

    def nbytes(module: torch.nn.Module) -> int:
        total = 0
        for t in [*module.parameters(), *module.buffers()]:
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
        return total

    attn = tuple(nbytes(getattr(b, adapter.attn_name)) for b in blocks)
    block = tuple(a + nbytes(b) for a, b in zip(attn, blocks, strict=True))
    linear = tuple(
        sum(m.weight.numel() for m in b.modules() if isinstance(m, torch.nn.Linear)) for b in blocks
    )
    other = nbytes(model)
    text = model.config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    size = next(model.parameters()).element_size()
    kv = 2 * len(blocks) * text.num_key_value_heads * head_dim * size
    return Shapes(
        len(blocks), block, attn, linear, other, text.hidden_size, text.vocab_size, kv, size
    )


@lru_cache(maxsize=32)
def _cached_meta(config_json: str, dtype: torch.dtype) -> tuple[torch.nn.Module, Shapes]:
    model = meta_model(json.loads(config_json), dtype)
    return model, shapes_of(model)


def model_and_shapes(cfg: ModelConfig, dtype: torch.dtype) -> tuple[torch.nn.Module, Shapes]:
    """The job's model on the meta device and its ``Shapes`` (cached per config and dtype;
    callers that change the model must deep-copy it)."""
    return _cached_meta(json.dumps(config_dict(cfg), sort_keys=True), dtype)
