"""The memory model against measured peaks on the stages `tests/test_memory.py` leaves to
the tiny models or does not reach: FinerCut's search, the speed stage, and the shared-prefix
scorer on a 0-shot and a 5-shot task, on the offline models.

Predicted: ``layerprune.memory.predict`` from the config alone. Measured: live tensor bytes
(``memory.measure.measure_job``: every storage from its allocation until it is freed, not the
process RSS), each stage of the job run as ``pipeline.run`` runs it. Small settings; the
search is cut to its first step (its peak), the speed stage to one tiny setting.

    python -m benchmarks.memory_model --models smollm2-135m qwen2.5-0.5b [--fewshot]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tests.conftest import compose
from tests.test_memory import SMALL, SPEED

from layerprune import paths
from layerprune.config import validate
from layerprune.memory.measure import measure_job
from layerprune.memory.predict import Target, predict

BASE = [*SMALL, "healing=none"]  # the memory test's small job, without healing
JOBS = {
    "finercut search": [
        "pruning_method=finercut",
        "calibration=wiki",
        "fraction=0.02",  # one greedy step: the search's peak
        "pruning_method.search_fraction=0.02",
    ],
    "speed": SPEED,
    "scorer 0-shot": ["benchmark.tasks=[{name: arc_easy, limit: 20}]"],
}
FEWSHOT = {"scorer 5-shot": ["benchmark.tasks=[{name: mmlu, num_fewshot: 5, limit: 1}]"]}


def compare(model: str, overrides: list[str]) -> dict[str, tuple[int, int]]:
    """``{stage: (predicted, measured)}`` bytes of one job (fresh scan and search caches)."""
    tmp = Path(tempfile.mkdtemp(prefix="memory-model-"))
    paths.scan_cache_dir = lambda: tmp / "scans"
    cfg = validate(compose([f"model={model}", *BASE, *overrides]))
    predicted = {p.stage: p.bytes for p in predict(cfg, Target("cpu"))}
    measured = measure_job(cfg, tmp / "job")
    return {s: (predicted[s], measured[s]) for s in predicted if s in measured}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["smollm2-135m"])
    p.add_argument("--fewshot", action="store_true", help="also MMLU 5-shot (minutes)")
    args = p.parse_args()
    jobs = {**JOBS, **(FEWSHOT if args.fewshot else {})}
    print(f"{'model':14s} {'job':16s} {'stage':9s} {'predicted MB':>12s} {'measured MB':>12s}  off")
    for model in args.models:
        for name, overrides in jobs.items():
            for stage, (pred, meas) in compare(model, overrides).items():
                print(
                    f"{model:14s} {name:16s} {stage:9s} {pred / 1e6:12.1f} {meas / 1e6:12.1f}"
                    f"  {pred / meas - 1:+.1%}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
