"""Pruning methods as plug-ins: a method from tests/ runs through a job without edits in src/;
the perplexity criterion (one-shot and iterative) equals a hand computation."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from layerprune import paths, pipeline
from layerprune.config import CalibrationConfig, validate
from layerprune.errors import LayerpruneError
from layerprune.methods.ppl import perplexity_order
from layerprune.methods.search import calibration_tokens
from layerprune.models.load import load_model
from layerprune.surgery.blocks import remove_blocks
from tests.conftest import compose, needs_assets, tiny_config

TESTS_CONF = Path(__file__).parent / "conf"
needs_text = needs_assets("text")


def test_plugin_method_from_tests_runs_through_a_job(tmp_path):
    cfg = compose(
        [
            f"hydra.searchpath=[file://{TESTS_CONF}]",
            "model=tiny-llama",
            "pruning_method=every_other",
            "pruning_method.offset=2",
            "fraction=0.375",  # 3 of 8 blocks
            "benchmark=none",
            "save_checkpoint=true",
        ]
    )
    checked = validate(cfg)
    assert type(checked.pruning_method).__module__ == "tests.toy_method"
    r = pipeline.run(checked, OmegaConf.to_container(cfg), tmp_path).to_dict()
    assert r["plan"]["method"] == "every_other" and r["plan"]["removed_blocks"] == [2, 4, 6]
    assert r["params"]["after"] < r["params"]["before"]
    assert (Path(r["checkpoint"]) / "config.json").exists()
    with pytest.raises(LayerpruneError, match="offsett"):  # a misspelt setting of the plug-in
        validate(
            compose(
                [
                    f"hydra.searchpath=[file://{TESTS_CONF}]",
                    "pruning_method=every_other",
                    "+pruning_method.offsett=1",
                ]
            )
        )


def _calibration() -> CalibrationConfig:
    return CalibrationConfig(source="c4", num_sequences=4, seq_len=24, batch_size=2)


def _hand_losses(lm, calibration) -> list[float]:
    """Per block: the mean next-token loss of a copy with that block deleted (HF's own loss)."""
    seqs = calibration_tokens(lm, calibration)
    out = []
    for i in range(len(lm.adapter.blocks(lm.model))):
        model = copy.deepcopy(lm.model)
        remove_blocks(model, lm.adapter, [i])
        with torch.no_grad():
            losses = [model(input_ids=b, labels=b).loss for b in seqs.split(calibration.batch_size)]
        out.append(float(torch.stack(losses).mean()))
    return out


@needs_text
@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_ppl_one_shot_equals_hand_computed_ranking(family, tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "scan_cache_dir", lambda: tmp_path)
    lm = load_model(tiny_config(family, layers=6))
    hand = _hand_losses(lm, _calibration())
    order, forwards, hit = perplexity_order(lm, _calibration(), "one_shot", 0)
    assert not hit
    assert [b for b, _ in order] == sorted(range(6), key=lambda i: (hand[i], i))
    for block, loss in order:
        assert loss == pytest.approx(hand[block], rel=1e-5)
    assert forwards < 6 * 5 * 2  # block i runs only blocks i.. (naive: 5 blocks x 2 batches each)
    again = perplexity_order(lm, _calibration(), "one_shot", 0)
    assert again[2] and again[0] == [tuple(x) for x in order]


@needs_text
def test_ppl_iterative_first_removal_is_one_shots_then_rescored(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "scan_cache_dir", lambda: tmp_path)
    lm = load_model(tiny_config("qwen2", layers=6))
    one_shot, _, _ = perplexity_order(lm, _calibration(), "one_shot", 0)
    iterative, _, _ = perplexity_order(lm, _calibration(), "iterative", 3)
    assert len(iterative) == 3 and iterative[0] == one_shot[0]
    # the second removal is re-scored with the first block gone: a hand check of its loss
    first, second = iterative[0][0], iterative[1][0]
    model = copy.deepcopy(lm.model)
    remove_blocks(model, lm.adapter, [first, second])
    seqs = calibration_tokens(lm, _calibration())
    with torch.no_grad():
        loss = torch.stack([model(input_ids=b, labels=b).loss for b in seqs.split(2)]).mean()
    assert iterative[1][1] == pytest.approx(float(loss), rel=1e-5)


@needs_text
@pytest.mark.parametrize("mode", ["one_shot", "iterative"])
def test_ppl_job_removes_blocks_and_reuses_its_search(mode, tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "scan_cache_dir", lambda: tmp_path / "scans")
    base = [
        "model=tiny-mistral",
        "pruning_method=ppl",
        f"pruning_method.mode={mode}",
        "pruning_method.search_fraction=0.375",
        "calibration.num_sequences=2",
        "calibration.seq_len=24",
        "benchmark=none",
    ]
    runs = []
    for i, fraction in enumerate((0.25, 0.375)):
        cfg = compose([*base, f"fraction={fraction}"])
        runs.append(
            pipeline.run(validate(cfg), OmegaConf.to_container(cfg), tmp_path / str(i)).to_dict()
        )
    (a, b) = runs
    assert a["scan_cache"] == "miss" and b["scan_cache"] == "hit"
    assert a["plan"]["metric"] == f"perplexity/{mode}" and a["plan"]["scores"]["block_forwards"] > 0
    assert len(a["plan"]["removed_blocks"]) == 2 and len(b["plan"]["removed_blocks"]) == 3
    assert set(a["plan"]["removed_blocks"]) < set(b["plan"]["removed_blocks"])  # prefix order
    assert b["params"]["after"] < a["params"]["after"] < a["params"]["before"]


def test_ppl_settings_are_checked():
    with pytest.raises(LayerpruneError, match="one_shot or iterative"):
        validate(compose(["pruning_method=ppl", "pruning_method.mode=greedy"]))
    with pytest.raises(LayerpruneError, match="takes metric perplexity"):
        validate(compose(["pruning_method=ppl", "metric=angular"]))
    assert validate(compose(["pruning_method=ppl"])).metric.name == "perplexity"
