"""Offline assets: pinned PyPI packages -> verified downloads -> converted cache."""
