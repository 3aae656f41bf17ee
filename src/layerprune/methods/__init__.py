"""Pruning methods: scan (+ fraction) -> PruningPlan."""
