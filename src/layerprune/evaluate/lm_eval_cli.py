"""``layerprune-lm-eval``: lm-eval's own command line, with layerprune's scorer registered.

lm-eval 0.4 has no plug-in entry points for models, so this is its CLI (``lm_eval`` /
``lm-eval``: the same flags, output files and tables) after importing the module that
registers ``layerprune-shared`` (``evaluate/shared_prefix.py``). Any Hugging Face checkpoint,
a layerprune one included, is then scored by the shared-prefix scorer:

    layerprune-lm-eval --model layerprune-shared --model_args pretrained=DIR --tasks piqa

(``--model hf`` gives stock's answers to compare; ``trust_remote_code=True`` in
``--model_args`` for a sublayer-pruned checkpoint; scorer constants as model arguments, e.g.
``pretrained=DIR,call_tokens=64``.)
"""

from __future__ import annotations


def main() -> None:
    """Console-script entry point: ``lm_eval``'s ``cli_evaluate``."""
    from lm_eval.__main__ import cli_evaluate

    import layerprune.evaluate.shared_prefix  # noqa: F401  (registers "layerprune-shared")

    cli_evaluate()


if __name__ == "__main__":
    main()
