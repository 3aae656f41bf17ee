"""Evaluation: perplexity / loss on held-out text (lm-eval benchmarks from issue #3)."""
