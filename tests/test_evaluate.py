"""lm-eval on the in-memory model, offline: the quick suite, MMLU 5-shot over 57 subjects."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from layerprune import pipeline
from layerprune.cli import precheck
from layerprune.config import validate
from layerprune.evaluate.harness import evaluate_tasks
from layerprune.evaluate.scorers import SharedScorer, StockScorer
from layerprune.models.load import load_model
from tests.conftest import compose, have_asset, tiny_config

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(
        not (have_asset("benchmarks") and have_asset("text")),
        reason="benchmark/text assets not built: run `make assets`",
    ),
]


def test_quick_suite_on_tiny_model(tmp_path):
    cfg = compose(
        [
            "model=tiny-qwen2",
            "benchmark=quick",
            "pruning_method=none",
            "benchmark.perplexity.0.max_tokens=2048",
        ]
    )
    res = pipeline.run(validate(cfg), OmegaConf.to_container(cfg), tmp_path).to_dict()
    m = res["metrics"]
    for task, chance in [("arc_easy", 0.25), ("piqa", 0.5), ("winogrande", 0.5)]:
        assert m[f"{task}/n"] == 200
        assert 0.0 <= m[f"{task}/acc"] <= 1.0 and m[f"{task}/acc_stderr"] > 0
        assert m[f"{task}/chance"] == pytest.approx(chance, abs=0.01)
        assert res["timings"][f"eval_{task}_s"] > 0
    assert m["arc_easy/acc_norm"] >= 0
    assert m["wiki/tokens"] > 1000 and m["wiki/ppl"] > 50  # random weights: near-uniform
    assert m["wiki/word_ppl"] > m["wiki/ppl"]  # several byte tokens per word


def test_mmlu_5shot_finds_all_subjects():
    lm = load_model(tiny_config("llama"))
    out = evaluate_tasks(SharedScorer().lm(lm.model, lm.tokenizer), [("mmlu", 5, 1)])
    m = out["mmlu"].metrics
    assert m["mmlu/n"] == 57  # one item from each of the 57 subjects
    assert m["mmlu/chance"] == 0.25 and 0 <= m["mmlu/acc"] <= 1
    r = out["mmlu"]  # each request's text, in the answers' order (benchmarks re-score them)
    assert len(r.arguments) == len(r.answers) == r.requests == 57 * 4
    assert [cont for _, cont in r.arguments[:4]] == [" A", " B", " C", " D"]
    assert r.arguments[0][0].endswith("Answer:") and r.arguments[0][0] == r.arguments[3][0]


def test_batched_equals_unbatched():
    """Batching changes speed, not answers."""
    lm = load_model(tiny_config("mistral"))
    a = evaluate_tasks(StockScorer(batch_size=1).lm(lm.model, lm.tokenizer), [("arc_easy", 0, 12)])
    b = evaluate_tasks(StockScorer(batch_size=16).lm(lm.model, lm.tokenizer), [("arc_easy", 0, 12)])
    assert a["arc_easy"].metrics["arc_easy/acc"] == b["arc_easy"].metrics["arc_easy/acc"]
    assert a["arc_easy"].metrics["arc_easy/acc_norm"] == b["arc_easy"].metrics["arc_easy/acc_norm"]


def test_fewshot_from_the_evaluated_split_is_refused():
    err = precheck(["benchmark=hellaswag", "benchmark.tasks.0.num_fewshot=5"])
    assert err and "no train split" in err
    assert (
        precheck(["benchmark=hellaswag", "benchmark.data=hub", "benchmark.tasks.0.num_fewshot=5"])
        is None
    )
