"""layerprune: depth pruning of LLMs (Gromov et al. 2024, FinerCut) as Hydra experiments."""

__version__ = "0.1.0"
