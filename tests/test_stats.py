"""Paired statistics against hand computations (and scipy where it has one)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from layerprune.stats import (
    constant_answer,
    holm,
    majority,
    mcnemar,
    paired,
    paired_mean,
    top_answer,
)


def items(correct: list[int], preds=None, targets=None, prefix="t") -> dict[str, list]:
    n = len(correct)
    return {
        "doc": [f"{prefix}:{i}" for i in range(n)],
        "target": targets or [i % 2 for i in range(n)],
        "pred": preds or [0] * n,
        "acc": [float(c) for c in correct],
    }


def test_mcnemar_is_the_exact_binomial_on_discordant_items():
    # 9 items right under B only, 2 under A only: p = 2 * P(X <= 2 | n = 11, 1/2)
    hand = 2 * sum(math.comb(11, k) for k in range(3)) / 2**11
    assert mcnemar(9, 2) == pytest.approx(hand)
    assert mcnemar(0, 0) == 1.0


def test_paired_difference_interval_and_mcnemar_on_a_made_up_table():
    rng = np.random.default_rng(3)
    a = (rng.random(400) < 0.55).astype(int)
    b = a.copy()
    flip = rng.choice(400, 60, replace=False)
    b[flip[:45]] = 1  # B gains on 45 items (some were already right)
    b[flip[45:]] = 0
    r = paired(items(list(a)), items(list(b)))
    d = b - a
    assert r.diff == pytest.approx(d.mean()) and r.n == 400
    assert (r.b_only, r.a_only) == (
        int(((b == 1) & (a == 0)).sum()),
        int(((a == 1) & (b == 0)).sum()),
    )
    assert r.p == pytest.approx(scipy_stats.binomtest(r.b_only, r.b_only + r.a_only).pvalue)
    ref = scipy_stats.bootstrap(
        (d,), np.mean, method="percentile", n_resamples=10000, random_state=0
    )
    assert r.low == pytest.approx(ref.confidence_interval.low, abs=0.004)
    assert r.high == pytest.approx(ref.confidence_interval.high, abs=0.004)


def test_paired_uses_only_the_items_both_have_in_one_order():
    a = items([1, 0, 1, 1])
    b = {**items([0, 1, 1], prefix="t"), "doc": ["t:3", "t:1", "t:0"]}  # shuffled, one missing
    r = paired(a, b)
    # shared items t:0 (1 -> 1), t:1 (0 -> 1), t:3 (1 -> 0): mean difference 0
    assert r.n == 3 and r.diff == pytest.approx(0.0) and (r.b_only, r.a_only) == (1, 1)


def test_a_constant_difference_has_a_point_interval():
    r = paired(items([0] * 50), items([1] * 50))
    assert r.diff == r.low == r.high == 1.0 and r.excludes_zero()


def test_paired_mean_weighs_tasks_equally():
    a = {"x": items([0] * 10, prefix="x"), "y": items([0] * 100, prefix="y")}
    b = {"x": items([1] * 10, prefix="x"), "y": items([0] * 100, prefix="y")}
    r = paired_mean(a, b, {"x": "acc", "y": "acc"})
    assert r.diff == pytest.approx(0.5) and r.low == pytest.approx(0.5)


def test_holm_by_hand():
    # sorted 0.01, 0.02, 0.04 -> x3, x2, x1 with running maximum: 0.03, 0.04, 0.04
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_majority_and_a_constant_answer_are_found():
    boolq = items([1, 1, 0, 1, 0], preds=[1, 1, 1, 1, 1], targets=[1, 1, 0, 1, 0])
    assert majority(boolq) == (0.6, 1)
    assert constant_answer(boolq) == 1
    mixed = items([1, 0], preds=[0, 1])
    assert constant_answer(mixed) is None and constant_answer(mixed, share=0.5) == 0
    # nearly constant: "no" on 97 of 100 items is flagged at the default share (0.95), 90 of
    # 100 is not
    no_97 = items([1] * 100, preds=[0] * 97 + [1] * 3)
    assert top_answer(no_97) == (0, 0.97) and constant_answer(no_97) == 0
    assert constant_answer(no_97, share=1.0) is None
    assert constant_answer(items([1] * 100, preds=[0] * 90 + [1] * 10)) is None


def test_majority_of_a_task_scored_by_context_uses_the_answer_index():
    # WinoGrande: lm-eval logs the continuation's text as the target; the answer index is the
    # prediction where it was right and the other option where it was wrong
    items = {
        "target": ["was too big.", "wakes up late.", "got the harder cases.", "was small."],
        "pred": [1, 0, 0, 1],
        "acc": [1.0, 0.0, 1.0, 1.0],
    }
    assert majority(items) == (0.75, 1)  # indices 1, 1, 0, 1
