"""Shared fixtures: composing configs, tiny random models, and the offline SmolLM2."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# request caches of test runs stay out of the user's cache (subprocesses inherit this)
os.environ.setdefault("LAYERPRUNE_EVAL_CACHE", tempfile.mkdtemp(prefix="layerprune-eval-cache-"))

from layerprune import paths  # noqa: E402
from layerprune.config import ModelConfig, RandomModelConfig, register  # noqa: E402

ASSET_HOME = paths.home()  # where the built assets are, whatever a test sets LAYERPRUNE_HOME to

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
FAMILIES = ["llama", "qwen2", "mistral"]

register()
torch.set_num_threads(2)


def compose(overrides: list[str] | None = None, hydra: bool = False):
    """The config ``layerprune <overrides>`` would run, composed without running it; with
    ``speed=none`` unless the overrides choose a ``speed`` (tests time nothing they do not
    test)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    overrides = list(overrides or [])
    if not any(o.startswith("speed") for o in overrides):
        overrides.append("speed=none")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=overrides, return_hydra_config=hydra)


def tiny_config(family: str = "llama", layers: int = 8, seed: int = 0) -> ModelConfig:
    """The ``tiny-<family>`` model config (random weights, hidden 64)."""
    return ModelConfig(
        name=f"tiny-{family}",
        source="random",
        id=f"tiny-{family}",
        dtype="float32",
        device="cpu",
        random=RandomModelConfig(family=family, num_hidden_layers=layers, seed=seed),
    )


def assert_cache_matches_no_cache(model, prompt: torch.Tensor, new_tokens: int) -> None:
    """Greedy generation with the KV cache equals generation without it, and a forward that
    continues a cache equals the full forward (layer_idx, cache positions and skipped attention
    are all consistent; the second check also holds without generate's own position ids)."""
    cached = model.generate(prompt, max_new_tokens=new_tokens, do_sample=False, use_cache=True)
    plain = model.generate(prompt, max_new_tokens=new_tokens, do_sample=False, use_cache=False)
    assert torch.equal(cached, plain)
    from transformers import DynamicCache

    half, cache = cached.shape[1] // 2, DynamicCache()
    with torch.no_grad():
        full = model(cached).logits
        model(cached[:, :half], past_key_values=cache, use_cache=True)
        rest = model(cached[:, half:], past_key_values=cache, use_cache=True).logits
    assert torch.allclose(rest, full[:, half:], atol=1e-5, rtol=1e-4)


def have_asset(name: str) -> bool:
    from layerprune.assets.build import is_built

    return is_built(name)


def needs_assets(*names: str):
    """Mark a test ``real`` (it reads built offline assets) and skip it where they are missing
    (``make test`` builds them; ``make test-fast`` runs without)."""
    missing = [n for n in names if not have_asset(n)]
    reason = f"assets {missing} not built: run `make assets`"

    def mark(test):
        return pytest.mark.real(pytest.mark.skipif(bool(missing), reason=reason)(test))

    return mark


@pytest.fixture(scope="session")
def smollm2():
    """The offline SmolLM2-135M, loaded once per session (skips if the cache lacks it)."""
    if not have_asset("smollm2-135m"):
        pytest.skip("SmolLM2 asset not built: run `make assets`")
    from layerprune.config import ModelConfig
    from layerprune.models.load import load_model

    return load_model(ModelConfig(name="smollm2-135m", source="asset", id="smollm2-135m"))


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests skip where CUDA is absent (CI, these CPU machines), unless
    ``LAYERPRUNE_TEST_DEVICE=cpu`` asks for their dry run on the CPU (``tests/test_gpu.py``)."""
    if torch.cuda.is_available() or os.environ.get("LAYERPRUNE_TEST_DEVICE") == "cpu":
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
