"""``layerprune-assets``: fetch and convert the offline assets into the cache.

layerprune-assets                      # the default set (SmolLM2-135M, benchmarks, text)
layerprune-assets gemma3-270m          # extra models on request
layerprune-assets --list               # what exists and what is built
layerprune-assets --verify             # hash every built file against its manifest
layerprune-assets --rebuild smollm2-135m   # delete and build again (a damaged file)
"""

from __future__ import annotations

import argparse
import sys

from layerprune import paths
from layerprune.assets.build import build, is_built, manifest, remove, verify
from layerprune.assets.registry import ASSETS, default_assets
from layerprune.errors import LayerpruneError


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="layerprune-assets", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"assets to build (default: {default_assets()})")
    parser.add_argument("--list", action="store_true", help="list assets and their state")
    parser.add_argument(
        "--verify", action="store_true", help="hash every built file (exit 1 if any differs)"
    )
    parser.add_argument("--rebuild", action="store_true", help="delete the named assets first")
    args = parser.parse_args(argv)

    print(f"asset cache: {paths.home()}  (set LAYERPRUNE_HOME to move it)")
    if args.list:
        for name, a in ASSETS.items():
            state = "built" if is_built(name) else "-"
            extra = "" if a.default else " (extra)"
            print(f"  {name:14s} {state:6s} {a.description}{extra}")
        return 0

    if args.verify:
        return _verify(args.names or [n for n in ASSETS if is_built(n)])
    names = args.names or default_assets()
    if args.rebuild:
        if not args.names:
            print(
                "error: --rebuild needs the assets to rebuild, e.g. smollm2-135m", file=sys.stderr
            )
            return 2
        for name in names:
            remove(name)
    built = []
    try:
        for i, name in enumerate(names, 1):
            print(f"[{i}/{len(names)}] {name}")
            status = build(name)
            built.append(status)
            print(f"  {'already built, nothing to do' if status == 'cached' else 'built'}")
            _print_counts(name)
    except LayerpruneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if all(s == "cached" for s in built):
        print("all assets already built; nothing to do")
    return 0


def _verify(names: list[str]) -> int:
    """Every file of each built asset against its recorded SHA256; exit code 1 if any differs."""
    bad = 0
    for name in names:
        if not is_built(name):
            print(f"  {name:14s} not built")
            continue
        problems = verify(name)
        print(f"  {name:14s} {'ok' if not problems else 'DIFFERS'}")
        for file, why in problems.items():
            print(f"    {file}: {why}")
        if problems:
            bad += 1
            print(f"    rebuild it: layerprune-assets --rebuild {name}")
    return 1 if bad else 0


def _print_counts(name: str) -> None:
    """One line per dataset folder / text source, summed over configs (MMLU has 57)."""
    m = manifest(name)
    for key in ("rows", "documents"):
        groups = m.get(key) or {}
        configs: dict[str, int] = {}
        for group in groups:
            configs[group.split("/")[0]] = configs.get(group.split("/")[0], 0) + 1
        totals: dict[str, dict[str, int]] = {}
        for group, splits in groups.items():
            folder = group.split("/")[0] if configs[group.split("/")[0]] > 3 else group
            for split, n in splits.items():
                totals.setdefault(folder, {}).setdefault(split, 0)
                totals[folder][split] += n
        for folder, splits in totals.items():
            extra = f" ({configs[folder]} configs)" if configs.get(folder, 1) > 3 else ""
            print(f"  {folder}{extra}: " + ", ".join(f"{s} {n:,}" for s, n in splits.items()))
    if "parameters" in m:
        print(f"  {m['class']}: {m['num_hidden_layers']} blocks, {m['parameters']:,} parameters")


if __name__ == "__main__":
    sys.exit(main())
