"""The documents a job reads: offline splits built by ``layerprune-assets``
(``text/<source>/<split>.jsonl``) or a Hub text dataset streamed through ``datasets``.

A ``Text`` (``source`` + optional ``HubText``) gives each use (calibration, healing,
evaluation) its documents and a name that says exactly which ones (healing keys its resume
snapshots by it). The offline splits are disjoint by construction; a Hub dataset's uses read
the disjoint ``skip``/``take`` ranges its config declares (checked in ``config``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from layerprune import paths
from layerprune.config import HubText, TextSource, TextSplit
from layerprune.errors import LayerpruneError


def load_documents(source: str, split: str) -> list[str]:
    """The documents of one offline split, in the fixed order the asset build wrote them."""
    path = paths.text_dir() / source / f"{split}.jsonl"
    if not (paths.text_dir() / "asset.json").exists() or not path.exists():
        raise LayerpruneError(
            f"offline text {source}/{split} is not in the asset cache ({path}); "
            "fetch it with `layerprune-assets text` (or `make assets`)"
        )
    from layerprune.assets.verify import content_identity

    content_identity("text", paths.text_dir())  # a changed file: one warning (keys by content)
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def hub_documents(hub: HubText, use: TextSplit) -> list[str]:
    """The ``take`` documents after ``skip`` of the use's split, streamed (nothing else is
    downloaded); fewer when the split ends first."""
    import datasets

    r = hub.range(use)
    try:
        stream = datasets.load_dataset(hub.path, hub.name, split=r.split, streaming=True)
        rows = list(stream.skip(r.skip).take(r.take))
    except Exception as e:  # datasets raises many kinds (connection, missing config/split)
        raise LayerpruneError(
            f"cannot stream {_where(hub)} split {r.split!r}: {str(e).splitlines()[0]} "
            "(needs the Hub, or a local folder in the Hub layout as hub.path)"
        ) from e
    if rows and hub.text_field not in rows[0]:
        raise LayerpruneError(
            f"{_where(hub)} has no field {hub.text_field!r} (fields: {sorted(rows[0])}); "
            "set hub.text_field"
        )
    return [row[hub.text_field] for row in rows]


def _where(hub: HubText) -> str:
    return f"{hub.path}" + (f" (config {hub.name})" if hub.name else "")


def _folder_stamp(path: str) -> str:
    """For a local folder: a hash of its files' names, sizes and mtimes (cheap), so that
    changed files change the name; empty for a Hub id."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return ""
    stats = sorted(
        (str(p.relative_to(folder)), p.stat().st_size, int(p.stat().st_mtime))
        for p in folder.rglob("*")
        if p.is_file()
    )
    return "@" + hashlib.sha256(repr(stats).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Text:
    """Where a job's text comes from: an offline source, or a Hub dataset (``hub``)."""

    source: TextSource
    hub: HubText | None = None

    def documents(self, use: TextSplit | str) -> list[str]:
        """The documents of one use, in a fixed order."""
        use = TextSplit(use)
        if self.source == TextSource.hub:
            return hub_documents(self.hub, use)
        return load_documents(self.source.value, use.value)

    def name(self, use: TextSplit | str) -> str:
        """Which documents exactly: ``c4/healing`` offline; for the Hub the dataset, config,
        field and range (and a local folder's file stamp)."""
        use = TextSplit(use)
        if self.source != TextSource.hub:
            return f"{self.source.value}/{use.value}"
        h, r = self.hub, self.hub.range(use)
        config = f"/{h.name}" if h.name else ""
        stamp = _folder_stamp(h.path)
        return f"hub:{h.path}{config}{stamp}:{h.text_field}:{r.split}[{r.skip}:{r.skip + r.take}]"

    @property
    def label(self) -> str:
        """A short name for metrics and logs: ``c4``, or ``hub-<dataset>`` (``hub.label``)."""
        if self.source != TextSource.hub:
            return self.source.value
        return self.hub.label or "hub-" + self.hub.path.rstrip("/").split("/")[-1]
