"""Majority-class rates without a model: lm-eval selects the items and their targets, and the
rate equals a count on the raw data files."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from layerprune import paths
from tests.conftest import needs_assets


def first_rows(relative: str, n: int) -> list[dict]:
    lines = (paths.datasets_dir() / relative).read_text().splitlines()[:n]
    return [json.loads(line) for line in lines]


@needs_assets("benchmarks")
def test_majority_rates_equal_a_count_of_the_raw_labels():
    from layerprune.evaluate.baselines import task_baselines

    out = task_baselines([("boolq", 0, 200), ("winogrande", 0, 200), ("piqa", 0, 100)])
    for task, relative, key in [
        ("boolq", "aps__super_glue/boolq/validation.jsonl", "label"),
        ("winogrande", "allenai__winogrande/winogrande_xl/validation.jsonl", "answer"),
        ("piqa", "baber__piqa/default/validation.jsonl", "label"),
    ]:
        n = int(out[task]["n"])
        labels = Counter(str(r[key]) for r in first_rows(relative, n))
        assert out[task]["majority"] == pytest.approx(labels.most_common(1)[0][1] / n), task
        assert out[task]["chance"] == pytest.approx(0.5), task
    assert out["boolq"]["n"] == 200 and out["piqa"]["n"] == 100
    # BoolQ's first 200 validation items: 63.5% one answer, where chance is 50% (issue #31)
    assert out["boolq"]["majority"] == pytest.approx(0.635)
