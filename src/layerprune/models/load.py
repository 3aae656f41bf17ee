"""Load model + tokenizer + adapter from a Hub id, a local folder, an offline asset or a seed."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from layerprune import paths
from layerprune.config import DType, ModelConfig, ModelSource
from layerprune.errors import LayerpruneError
from layerprune.models.adapter import BlockAdapter

WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")


@dataclass
class LoadedModel:
    """What every later stage needs; ``identity`` names the exact weights (for cache keys)."""

    model: torch.nn.Module
    tokenizer: object
    adapter: BlockAdapter
    identity: str
    device: torch.device
    dtype: torch.dtype
    load_in_4bit: bool = False

    def numbers(self) -> dict[str, Any]:
        """What decides the numbers this model computes: its weights, dtype, quantisation
        and device kind. Every cache of computed numbers keys by it (``cache_key``)."""
        return {
            "base": self.identity,
            "dtype": str(self.dtype),
            "load_in_4bit": self.load_in_4bit,
            "device": self.device.type,
        }

    def cache_key(self) -> dict[str, Any]:
        """``numbers()`` without the values every cache key had before quantisation and device
        were keyed (not 4-bit, CPU), so the entries made then still match."""
        out = self.numbers()
        if not out["load_in_4bit"]:
            del out["load_in_4bit"]
        if out["device"] == "cpu":
            del out["device"]
        return out


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LayerpruneError(f"model.device={device} but CUDA is not available")
    return torch.device(device)


def pinned_device(device: str, job_num: int | None) -> str:
    """A sweep's job ``k`` on a machine with several GPUs: ``auto`` becomes
    ``cuda:(k mod #GPUs)``, so parallel jobs (the joblib launcher) spread one per GPU instead
    of all on cuda:0. Anything else (one GPU, no GPU, a named device) is left as it is."""
    if device != "auto" or job_num is None or not torch.cuda.is_available():
        return device
    count = torch.cuda.device_count()
    return f"cuda:{job_num % count}" if count > 1 else device


def resolve_dtype(dtype: DType, device: torch.device) -> torch.dtype:
    """``auto`` -> bfloat16 on CUDA (the papers' setting), float32 on CPU (bf16 is slow there)."""
    if dtype == DType.auto:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype.value)


def _local_folder(cfg: ModelConfig) -> Path:
    """The folder of a ``path`` or ``asset`` model, with a message saying how to get it."""
    if cfg.source == ModelSource.asset:
        folder = paths.models_dir() / cfg.id
        if not (folder / "asset.json").exists():
            raise LayerpruneError(
                f"offline model '{cfg.id}' is not in the asset cache ({folder}); "
                f"fetch it with `layerprune-assets {cfg.id}` (or `make assets`)"
            )
        return folder
    folder = Path(cfg.id).expanduser()
    if not folder.is_dir():
        raise LayerpruneError(f"model path {folder} is not a folder")
    if not (folder / "config.json").exists() or not any(
        p for g in WEIGHT_GLOBS for p in folder.glob(g)
    ):
        raise LayerpruneError(
            f"model path {folder} holds no HF checkpoint (need config.json and "
            f"{' or '.join(WEIGHT_GLOBS)})"
        )
    return folder


def _identity(cfg: ModelConfig, folder: Path | None) -> str:
    """A string that changes whenever the weights could: Hub id@revision, or file sizes+mtimes
    of a local folder (cheap), or the asset's manifest, or the random spec."""
    if cfg.source == ModelSource.random:
        return "random:" + json.dumps(asdict(cfg.random), sort_keys=True)
    if cfg.source == ModelSource.hub:
        return f"hub:{cfg.id}@{cfg.revision or 'main'}"
    if cfg.source == ModelSource.asset:
        # the files as they are (assets/verify.py): a rebuild of the same files keeps the
        # identity, an altered file changes it
        from layerprune.assets.verify import content_identity

        return f"asset:{cfg.id}:{content_identity(cfg.id, folder)}"
    stats = sorted(
        (p.name, p.stat().st_size, int(p.stat().st_mtime))
        for g in WEIGHT_GLOBS
        for p in folder.glob(g)
    )
    return f"path:{folder.resolve()}:{hashlib.sha256(repr(stats).encode()).hexdigest()[:16]}"


def _is_sublayer_checkpoint(folder: Path | None) -> bool:
    if folder is None or not (folder / "config.json").exists():
        return False
    return "layerprune_sublayer_names" in json.loads((folder / "config.json").read_text())


def load_model(cfg: ModelConfig, **overrides) -> LoadedModel:
    """Load the model ``cfg`` describes, in eval mode, on its device, with a pad token set.
    ``overrides`` replace fields of ``cfg`` (``load_in_4bit=True``: the KD teacher in nf4)."""
    if overrides:
        cfg = replace(cfg, **overrides)
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    device = resolve_device(cfg.device) if cfg.device_map is None else torch.device("cuda")
    dtype = resolve_dtype(cfg.dtype, device)

    if cfg.source == ModelSource.random:
        from layerprune.models.random_model import byte_tokenizer, random_model

        model = random_model(cfg.random, dtype).to(device)
        tokenizer = byte_tokenizer()
        folder = None
    else:
        folder = None if cfg.source == ModelSource.hub else _local_folder(cfg)
        where = str(folder) if folder else cfg.id
        # a sublayer-pruned layerprune checkpoint carries its own (generated) modeling file
        trust = cfg.trust_remote_code or _is_sublayer_checkpoint(folder)
        kwargs: dict = {"dtype": dtype, "trust_remote_code": trust}
        if cfg.revision:
            kwargs["revision"] = cfg.revision
        if cfg.device_map:
            kwargs["device_map"] = cfg.device_map
        elif cfg.load_in_4bit:  # quantised as loaded, onto the job's device (no .to() later)
            kwargs["device_map"] = {"": str(device)}
        if cfg.load_in_4bit:
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=dtype,
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                where, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
            )
            model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
        except OSError as e:
            hint = (
                " (the Hugging Face Hub is unreachable or HF_HUB_OFFLINE is set; use an offline "
                "asset such as model=smollm2-135m, or a local folder with model.source=path)"
                if cfg.source == ModelSource.hub
                else ""
            )
            msg = f"cannot load model '{where}': {str(e).splitlines()[0]}{hint}"
            raise LayerpruneError(msg) from e
        if not cfg.device_map and not cfg.load_in_4bit:
            model = model.to(device)
        model.eval()

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    adapter = BlockAdapter.for_model(model)
    identity = _identity(cfg, folder)
    return LoadedModel(model, tokenizer, adapter, identity, device, dtype, cfg.load_in_4bit)


def count_parameters(model: torch.nn.Module) -> int:
    """Parameters actually held: a tensor stored once counts once, whether tied as one
    ``Parameter`` (``parameters()`` already yields it once) or as two ``Parameter`` objects
    over the same storage. Two equal copies in separate storage count twice: they are held
    twice (see ``embeddings_tied``). A 4-bit weight counts its model's weights, not its
    packed bytes (``weights_held``)."""
    seen: set = set()
    total = 0
    for p in model.parameters():
        ptr = p.data_ptr() if p.device.type != "meta" else 0
        key = (p.device, ptr, p.dtype, tuple(p.shape), tuple(p.stride())) if ptr else id(p)
        if key not in seen:
            seen.add(key)
            total += weights_held(p)
    return total


def weights_held(p: torch.Tensor) -> int:
    """The model's weights in ``p``: for a bitsandbytes 4-bit parameter (two weights packed
    per byte) the shape its quant state keeps, else ``numel``."""
    shape = getattr(getattr(p, "quant_state", None), "shape", None)
    return math.prod(shape) if shape is not None else p.numel()


def embeddings_tied(model: torch.nn.Module) -> bool:
    """Whether the output head reads the input embedding's storage (counted once)."""
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None or embed is None:
        return False
    a, b = head.weight, embed.weight
    return a is b or (a.device.type != "meta" and a.data_ptr() == b.data_ptr())


def free_memory() -> None:
    """Give back what dropped models held: HF models hold reference cycles (collected here),
    and CUDA's caching allocator keeps freed blocks until asked to return them."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
