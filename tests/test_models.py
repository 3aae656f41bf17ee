"""Loader + adapter on the tiny families; the real SmolLM2 from the asset cache."""

from __future__ import annotations

import json

import pytest
import torch

from layerprune.config import ModelConfig
from layerprune.errors import LayerpruneError
from layerprune.models.load import count_parameters, load_model
from tests.conftest import FAMILIES, assert_cache_matches_no_cache, tiny_config

ALL_FAMILIES = FAMILIES + ["gemma3_text"]


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_adapter_finds_blocks_attention_mlp_norm(family):
    lm = load_model(tiny_config(family))
    model, ad = lm.model, lm.adapter
    assert ad.family == family and len(ad.blocks(model)) == 8
    for i in range(8):
        assert ad.attention(model, i).layer_idx == i
        assert ad.attention_out(model, i).out_features == 64
        assert ad.mlp_out(model, i).in_features == 128
    # the final norm is what turns the last block's output into hidden_states[-1]
    captured = {}
    ad.blocks(model)[-1].register_forward_hook(lambda m, a, out: captured.update(x=out))
    ids = torch.randint(0, 256, (2, 12))
    out = model(ids, output_hidden_states=True)
    last = captured["x"][0] if isinstance(captured["x"], tuple) else captured["x"]
    torch.testing.assert_close(ad.final_norm(model)(last), out.hidden_states[-1])


def test_random_models_are_seeded():
    a, b = load_model(tiny_config("llama")), load_model(tiny_config("llama"))
    c = load_model(tiny_config("llama", seed=1))
    ids = torch.randint(0, 256, (1, 8))
    assert torch.equal(a.model(ids).logits, b.model(ids).logits)
    assert not torch.equal(a.model(ids).logits, c.model(ids).logits)
    assert a.identity == b.identity != c.identity


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_keep_blocks_renumbers_and_cache_matches(family):
    lm = load_model(tiny_config(family))
    model, ad = lm.model, lm.adapter
    before = count_parameters(model)
    types = list(getattr(model.config, "layer_types", None) or [])
    kept = [0, 1, 2, 5, 7]
    ad.keep_blocks(model, kept)
    assert model.config.num_hidden_layers == 5 and len(ad.blocks(model)) == 5
    assert [ad.attention(model, i).layer_idx for i in range(5)] == list(range(5))
    if types:
        assert model.config.layer_types == [types[i] for i in kept]
    assert count_parameters(model) < before
    prompt = torch.tensor([[10, 20, 30, 40, 50, 60]])
    assert_cache_matches_no_cache(model, prompt, 10)


def test_keep_blocks_rejects_bad_indices():
    lm = load_model(tiny_config("llama"))
    with pytest.raises(LayerpruneError):
        lm.adapter.keep_blocks(lm.model, [3, 1])
    with pytest.raises(LayerpruneError):
        lm.adapter.keep_blocks(lm.model, [0, 8])


def test_local_path_roundtrip(tmp_path):
    lm = load_model(tiny_config("qwen2"))
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    again = load_model(ModelConfig(name="x", source="path", id=str(tmp_path), device="cpu"))
    ids = torch.randint(0, 256, (1, 9))
    assert torch.equal(lm.model(ids).logits, again.model(ids).logits)
    assert again.identity.startswith("path:")


def test_path_without_weights_is_an_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(LayerpruneError, match="holds no HF checkpoint"):
        load_model(ModelConfig(name="x", source="path", id=str(tmp_path)))
    with pytest.raises(LayerpruneError, match="is not a folder"):
        load_model(ModelConfig(name="x", source="path", id=str(tmp_path / "nope")))


def test_missing_asset_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERPRUNE_HOME", str(tmp_path))
    with pytest.raises(LayerpruneError, match="layerprune-assets smollm2-135m"):
        load_model(ModelConfig(name="s", source="asset", id="smollm2-135m"))


def test_hub_offline_error_is_clear(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LayerpruneError, match="cannot load model 'meta-llama/Llama-2-7b-hf'"):
        load_model(ModelConfig(name="l", source="hub", id="meta-llama/Llama-2-7b-hf"))


@pytest.mark.real
def test_smollm2_says_paris(smollm2):
    tok, model = smollm2.tokenizer, smollm2.model
    assert smollm2.adapter.family == "llama" and len(smollm2.adapter.blocks(model)) == 30
    assert count_parameters(model) == 134_515_008
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    completion = tok.decode(out[0, ids.input_ids.shape[1] :])
    assert completion.startswith(" Paris"), completion


def test_asset_identity_is_what_was_built_not_when(tmp_path):
    """Rebuilding an asset (another ``built_s``) keeps its identity, so its request and scan
    caches stay valid; other weights (another file hash) change it."""
    from layerprune.config import ModelSource
    from layerprune.models.load import _identity

    cfg = ModelConfig(name="x", source=ModelSource.asset, id="x")
    manifest = {"name": "x", "file_sha256": "aa", "built_s": 35.4}

    def identity(**changes) -> str:
        (tmp_path / "asset.json").write_text(json.dumps({**manifest, **changes}))
        return _identity(cfg, tmp_path)

    assert identity() == identity(built_s=12.0)
    assert identity() != identity(file_sha256="bb")


# tiny llama: 8 blocks of q, o 64 x 64; k, v 64 x 32; gate, up, down 64 x 128; two norms of 64;
# the final norm; a 272 x 64 embedding table, and the head, its size again unless tied
TINY_BLOCK = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128 + 2 * 64
TINY_TIED = 8 * TINY_BLOCK + 64 + 272 * 64
TINY_UNTIED = TINY_TIED + 272 * 64


def test_tied_embeddings_count_once():
    from layerprune.models.load import embeddings_tied

    model = load_model(tiny_config("llama")).model
    assert count_parameters(model) == TINY_UNTIED == 330_816 and not embeddings_tied(model)
    # a copy in its own storage is held twice, so it counts twice
    model.lm_head.weight = torch.nn.Parameter(model.model.embed_tokens.weight.detach().clone())
    assert count_parameters(model) == TINY_UNTIED and not embeddings_tied(model)
    # another Parameter over the same storage counts once (parameters() alone counts it twice)
    model.lm_head.weight = torch.nn.Parameter(model.model.embed_tokens.weight.detach())
    assert sum(p.numel() for p in model.parameters()) == TINY_UNTIED
    assert count_parameters(model) == TINY_TIED == 313_408 and embeddings_tied(model)
    model.lm_head.weight = model.model.embed_tokens.weight  # tied as one Parameter
    assert count_parameters(model) == TINY_TIED and embeddings_tied(model)


def test_converter_ties_a_head_identical_to_the_embedding_only(tmp_path):
    from safetensors import safe_open

    from layerprune.assets.models import tie_identical_head

    logs: list[str] = []
    lm = load_model(tiny_config("llama"))
    model = lm.model
    assert not tie_identical_head(model, logs.append)  # random head: another tensor, kept
    assert count_parameters(model) == TINY_UNTIED and "kept untied" in logs[-1]
    with torch.no_grad():
        model.lm_head.weight.copy_(model.model.embed_tokens.weight)
    assert tie_identical_head(model, logs.append) and "tied" in logs[-1]
    assert model.config.tie_word_embeddings and count_parameters(model) == TINY_TIED
    model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        names = list(f.keys())
    assert "lm_head.weight" not in names  # the table is stored once
    again = load_model(ModelConfig(name="x", source="path", id=str(tmp_path), device="cpu"))
    assert count_parameters(again.model) == TINY_TIED
    ids = torch.randint(0, 256, (1, 7))
    assert torch.equal(model(ids).logits, again.model(ids).logits)
