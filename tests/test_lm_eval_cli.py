"""``layerprune-lm-eval``: lm-eval's own CLI scores a saved checkpoint with the shared-prefix
scorer (``--model layerprune-shared``) and gets stock's (``--model hf``) numbers to 1e-4."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from layerprune.models.load import load_model
from layerprune.plan import PruningPlan
from layerprune.surgery.blocks import remove_blocks, save_checkpoint
from tests.conftest import tiny_config

CLI = str(Path(sys.executable).parent / "layerprune-lm-eval")
TASK = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""
QUESTIONS = [
    ("The cat sat on the", ["mat", "moon landing", "mat and purred", "idea"], 0),
    ("Two plus two is", ["four", "five", "four, as everyone knows", "a fish"], 0),
    ("Water boils at", ["100 degrees", "100 degrees Celsius at sea level", "noon"], 1),
    ("The capital of France is", ["Paris", "Paris, the city of light", "Berlin"], 0),
    ("A question shares this prefix:", ["yes", "no"], 1),
    ("A question shares this prefix, too:", ["yes", "no", "maybe so"], 2),
]


def write_task(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"question": q, "choices": c, "label": y} for q, c, y in QUESTIONS]
    data = folder / "tiny_mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "tiny_mc.yaml").write_text(TASK.format(data=data))
    return folder


def run_cli(
    model: str, checkpoint: Path, tasks: Path, out: Path, device: str = "cpu"
) -> list[dict]:
    """Per-request (log-likelihood, is_greedy) of every item, from lm-eval's sample log."""
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        CLI,
        "--model",
        model,
        "--model_args",
        f"pretrained={checkpoint},dtype=float32",
        "--include_path",
        str(tasks),
        "--tasks",
        "tiny_mc",
        "--device",
        device,
        "--batch_size",
        "4",
        "--output_path",
        str(out),
        "--log_samples",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tiny_mc" in proc.stdout  # lm-eval's own results table
    if model == "layerprune-shared":  # scored by the shared-prefix path, not a stock fallback
        assert "Shared-prefix loglikelihood" in proc.stderr
        assert "scoring off" not in proc.stderr
    (samples,) = out.rglob("samples_tiny_mc_*.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    return sorted(rows, key=lambda r: r["doc_id"])


@pytest.mark.slow
def test_lm_eval_cli_scores_a_saved_checkpoint_as_stock(tmp_path):
    lm = load_model(tiny_config("qwen2"))
    remove_blocks(lm.model, lm.adapter, [3, 4])  # a pruned checkpoint, as a job saves it
    plan = PruningPlan("x", removed_blocks=[3, 4], num_candidates=8)
    checkpoint = save_checkpoint(lm.model, lm.tokenizer, plan, tmp_path / "ckpt")
    tasks = write_task(tmp_path / "tasks")
    stock = run_cli("hf", checkpoint, tasks, tmp_path / "stock")
    shared = run_cli("layerprune-shared", checkpoint, tasks, tmp_path / "shared")
    assert len(stock) == len(shared) == len(QUESTIONS)
    for a, b in zip(stock, shared, strict=True):
        assert a["doc_id"] == b["doc_id"] and a["acc"] == b["acc"]
        for request_a, request_b in zip(a["resps"], b["resps"], strict=True):
            (ll_a, greedy_a), (ll_b, greedy_b) = request_a[0], request_b[0]  # one answer each
            assert abs(float(ll_a) - float(ll_b)) <= 1e-4
            assert greedy_a == greedy_b


def test_the_scorer_implements_lm_evals_abstract_extension_point():
    """``_loglikelihood_tokens`` is what ``TemplateLM`` declares abstract for subclasses to
    implement; the scorer's override keeps its signature (``override_bs`` included)."""
    from lm_eval.api.model import TemplateLM
    from lm_eval.models.huggingface import HFLM

    from layerprune.evaluate.shared_prefix import SharedPrefixLM

    assert "_loglikelihood_tokens" in TemplateLM.__abstractmethods__
    ours = inspect.signature(SharedPrefixLM._loglikelihood_tokens).parameters
    stock = inspect.signature(HFLM._loglikelihood_tokens).parameters
    assert list(ours) == list(stock)
