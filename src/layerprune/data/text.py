"""Read the offline text splits built by ``layerprune-assets`` (``text/<source>/<split>.jsonl``)."""

from __future__ import annotations

import json

from layerprune import paths
from layerprune.errors import LayerpruneError


def load_documents(source: str, split: str) -> list[str]:
    """The documents of one split, in the fixed order the asset build wrote them."""
    path = paths.text_dir() / source / f"{split}.jsonl"
    if not (paths.text_dir() / "asset.json").exists() or not path.exists():
        raise LayerpruneError(
            f"offline text {source}/{split} is not in the asset cache ({path}); "
            "fetch it with `layerprune-assets text` (or `make assets`)"
        )
    from layerprune.assets.verify import content_identity

    content_identity(
        "text", paths.text_dir()
    )  # a changed file: one warning (caches key by content)
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]
