"""A claim's verdict and how much it rests on its thresholds.

A claim rule is a function returning ``"**holds**: <numbers>"`` (or ``does not hold``,
``cannot tell``, or ``"not run"``) whose keyword-only parameters are its thresholds, with the
values the rule states as defaults. ``judge`` runs it at those, then with each threshold at
x0.75 and x1.25: a verdict that flips is marked *fragile* and says where, so a reader sees
which verdicts a threshold decided (a 51% vs 49% split, a ratio of exactly 2.0).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable

WORDS = {True: "holds", False: "does not hold", None: "cannot tell"}
SCALES = (0.75, 1.25)


def verdict(holds: bool | None, evidence: str) -> str:
    """``**holds**: evidence`` (or does not hold / cannot tell)."""
    return f"**{WORDS[holds]}**: {evidence}"


def word(text: str) -> str | None:
    """The verdict word of a rule's text, None for "not run"."""
    m = re.match(r"\*\*(.+?)\*\*", text)
    return m.group(1) if m else None


def thresholds(rule: Callable) -> dict[str, float]:
    """The rule's keyword-only parameters and their defaults: its thresholds."""
    return {
        name: p.default
        for name, p in inspect.signature(rule).parameters.items()
        if p.kind is p.KEYWORD_ONLY and isinstance(p.default, int | float)
    }


def judge(rule: Callable, *args, **fixed) -> str:
    """The rule's verdict at its thresholds, then "stable" or "fragile: <verdict> at <name>
    x<scale>" for each threshold scaled by 0.75 and 1.25 (one at a time)."""
    text = rule(*args, **fixed)
    base = word(text)
    if base is None:
        return text
    flips = []
    for name, value in thresholds(rule).items():
        if name in fixed:
            continue
        for scale in SCALES:
            other = word(rule(*args, **fixed, **{name: value * scale}))
            if other is not None and other != base:
                flips.append(f"{other} at {name} x{scale:g}")
    tag = f" (fragile: {'; '.join(flips)})" if flips else " (stable at x0.75 and x1.25)"
    return text.replace(f"**{base}**", f"**{base}**{tag}", 1)


def rule_text(rule: Callable) -> str:
    """The rule's docstring on one line, with its thresholds' values."""
    doc = " ".join((rule.__doc__ or "").split())
    values = ", ".join(f"{k}={v:.3g}" for k, v in thresholds(rule).items())
    return doc + (f" Thresholds: {values}." if values else "")
