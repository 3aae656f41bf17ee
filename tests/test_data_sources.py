"""Text sources and what decides cached numbers: asking for more calibration text than there is
stops with one line (or, allowed, uses fewer and says so); a Hub dataset streamed from a local
folder in the Hub layout; cache keys that change with quantisation, dtype and device; 4-bit
parameter counts; GPU pinning of parallel jobs; cache locks with and without flock."""

from __future__ import annotations

import copy
import errno
import hashlib
import json
import logging

import pytest
import torch
import yaml

from layerprune import atomic, paths
from layerprune.config import (
    CalibrationConfig,
    HubRange,
    HubText,
    PerplexityConfig,
    TextSource,
    check_text_disjoint,
    validate,
)
from layerprune.data.calibration import calibration_sequences, check_calibration, packed_sequences
from layerprune.data.text import Text
from layerprune.errors import LayerpruneError
from layerprune.models.load import LoadedModel, count_parameters, load_model, pinned_device
from layerprune.models.random_model import byte_tokenizer
from layerprune.scan import cache as cache_mod
from layerprune.scan.run import calibrated_scan
from tests.conftest import compose, needs_assets, tiny_config

TOK = byte_tokenizer()  # one token per byte, EOS = 256

# ---------------------------------------------------------------- counts


def test_more_sequences_than_documents_is_one_line_naming_what_there_is():
    docs = ["abcd", "efgh", "x", "ijkl"]  # "x" is one token: not a sequence
    with pytest.raises(LayerpruneError) as e:
        calibration_sequences(TOK, docs, 5, 8, 0, where="toy/calibration")
    msg = str(e.value)
    assert "\n" not in msg
    assert "calibration.num_sequences=5 but toy/calibration holds 3 documents" in msg
    assert "calibration.allow_fewer=true" in msg


def test_allow_fewer_uses_what_there_is_and_says_so(caplog):
    docs = ["abcd", "efgh", "x", "ijkl"]
    with caplog.at_level(logging.WARNING):
        seqs = calibration_sequences(TOK, docs, 5, 8, 0, allow_fewer=True, where="toy")
    assert sorted(seqs) == sorted(TOK(d)["input_ids"] for d in ("abcd", "efgh", "ijkl"))
    assert "3 of the 5 sequences asked" in caplog.text
    assert calibration_sequences(TOK, docs, 2, 8, 0) == seqs[:2]  # enough: no check


def test_packed_sequences_beyond_the_text_is_one_line():
    docs = ["a" * 10, "b" * 13]  # 10 + 1 + 13 + 1 = 25 tokens: 3 sequences of 8
    c = CalibrationConfig(num_sequences=4, seq_len=8)
    with pytest.raises(LayerpruneError, match="toy holds 3 packed sequences of 8 tokens"):
        packed_sequences(TOK, docs, c, "toy")
    c.allow_fewer = True
    assert packed_sequences(TOK, docs, c, "toy").shape == (3, 8)
    with pytest.raises(LayerpruneError, match="holds 0 packed"):  # none is never allowed
        packed_sequences(TOK, ["abc"], c, "toy")


def test_packed_calibration_tokens_stop_before_the_search(tmp_path):
    from layerprune.methods.search import calibration_tokens

    hub = _hub(_hub_folder(tmp_path), take=2)
    lm = load_model(tiny_config())
    c = CalibrationConfig(source="hub", hub=hub, num_sequences=50, seq_len=16)
    with pytest.raises(LayerpruneError, match=r"packed sequences of 16 tokens; lower"):
        calibration_tokens(lm, c)


@needs_assets("text")
def test_preflight_check_names_the_offline_split_size():
    c = CalibrationConfig(source="c4", num_sequences=256)
    with pytest.raises(LayerpruneError, match="c4/calibration holds 144 documents"):
        check_calibration(c, packed=False)
    check_calibration(CalibrationConfig(source="c4", num_sequences=144), packed=False)
    check_calibration(CalibrationConfig(source="c4", num_sequences=256), packed=True)  # no tok
    c.allow_fewer = True
    check_calibration(c, packed=False)


def test_preflight_check_of_a_hub_range_reads_nothing(tmp_path):
    hub = _hub(tmp_path / "not-there", take=10)  # never streamed: the folder does not exist
    c = CalibrationConfig(source="hub", hub=hub, num_sequences=32)
    with pytest.raises(LayerpruneError, match="reads at most 10 documents"):
        check_calibration(c, packed=False)


# ---------------------------------------------------------------- the Hub layout

DOCS = {
    "train": [f"train document number {i}, long enough" for i in range(12)],
    "validation": [f"held-out document {i}" for i in range(4)],
}


def _hub_folder(tmp_path):
    """A dataset repo as the Hub lays it out: ``en/<split>.jsonl`` + a README ``configs:``."""
    folder = tmp_path / "toy_c4"
    files = []
    for split, docs in DOCS.items():
        (folder / "en").mkdir(parents=True, exist_ok=True)
        rows = "".join(json.dumps({"text": d, "url": "x"}) + "\n" for d in docs)
        (folder / "en" / f"{split}.jsonl").write_text(rows)
        files.append({"split": split, "path": f"en/{split}.jsonl"})
    header = yaml.safe_dump({"configs": [{"config_name": "en", "data_files": files}]})
    (folder / "README.md").write_text(f"---\n{header}---\n# toy\n")
    return folder


def _hub(folder, take: int = 3, **kw) -> HubText:
    return HubText(
        path=str(folder),
        name="en",
        calibration=HubRange("train", 0, take),
        healing=HubRange("train", take, 4),
        evaluation=HubRange("validation", 0, 2),
        **kw,
    )


def test_hub_text_streams_each_use_its_own_range(tmp_path):
    text = Text(TextSource.hub, _hub(_hub_folder(tmp_path)))
    assert text.documents("calibration") == DOCS["train"][:3]
    assert text.documents("healing") == DOCS["train"][3:7]
    assert text.documents("evaluation") == DOCS["validation"][:2]
    name = text.name("healing")
    assert name.startswith(f"hub:{tmp_path / 'toy_c4'}/en@") and name.endswith(":text:train[3:7]")
    assert text.label == "hub-toy_c4"
    assert Text(TextSource.c4).name("healing") == "c4/healing"  # offline names unchanged


def test_hub_text_field_missing_is_one_line(tmp_path):
    text = Text(TextSource.hub, _hub(_hub_folder(tmp_path), text_field="body"))
    with pytest.raises(LayerpruneError, match=r"no field 'body' \(fields: \['text', 'url'\]\)"):
        text.documents("calibration")


def test_hub_ranges_must_be_disjoint():
    with pytest.raises(LayerpruneError, match="calibration and healing ranges overlap"):
        HubText(path="p", calibration=HubRange("train", 0, 10), healing=HubRange("train", 5, 5))
    HubText(path="p", calibration=HubRange("train", 0, 10), healing=HubRange("train", 10, 5))
    ours = CalibrationConfig(source="hub", hub=HubText(path="p"))  # calibration train[0:1000]
    elsewhere = {"calibration": HubRange("test", 0, 1), "healing": HubRange("test", 1, 1)}
    theirs = HubText(path="p", evaluation=HubRange("train", 500), **elsewhere)
    ppl = PerplexityConfig(source="hub", hub=theirs)
    with pytest.raises(LayerpruneError, match="calibration's calibration range"):
        check_text_disjoint(ours, [ppl])
    check_text_disjoint(ours, [PerplexityConfig(source="hub", hub=HubText(path="p"))])


def test_c4_hub_config_composes_and_hub_needs_its_block():
    c = validate(compose(["calibration=c4_hub"])).calibration
    assert (c.source, c.hub.path, c.hub.name) == (TextSource.hub, "allenai/c4", "en")
    assert c.hub.healing.skip == c.hub.calibration.take  # healing starts after calibration
    with pytest.raises(LayerpruneError, match="calibration.source=hub needs a calibration.hub"):
        validate(compose(["calibration.source=hub"]))
    with pytest.raises(LayerpruneError, match="overlap"):
        validate(compose(["calibration=c4_hub", "calibration.hub.healing.skip=5"]))


def test_scan_on_hub_text_and_the_count_check_before_any_forward(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "scan_cache_dir", lambda: tmp_path / "scans")
    hub = _hub(_hub_folder(tmp_path))
    lm = load_model(tiny_config(layers=4))
    c = CalibrationConfig(source="hub", hub=hub, num_sequences=3, seq_len=16, batch_size=2)
    scan, hit = calibrated_scan(lm, c)
    assert not hit and scan.num_sequences == 3
    assert (scan.meta["num_sequences"], scan.meta["asked"]) == (3, 3)

    import layerprune.scan.run as run_mod

    def no_forward(*a, **k):
        raise AssertionError("forward pass before the count check")

    monkeypatch.setattr(run_mod, "scan_model", no_forward)
    c.num_sequences = 5
    with pytest.raises(LayerpruneError, match=r"train\[0:3\] holds 3 documents"):
        calibrated_scan(lm, c)


# ---------------------------------------------------------------- what decides the numbers


def _lm(**kw) -> LoadedModel:
    base = {"identity": "m", "device": torch.device("cpu"), "dtype": torch.float32}
    return LoadedModel(None, None, None, **{**base, **kw})


def test_scan_key_changes_with_quantisation_dtype_and_device_only():
    seqs = [[1, 2, 3]]
    key = cache_mod.scan_key(_lm().cache_key(), seqs, {})
    assert key == cache_mod.scan_key(_lm().cache_key(), seqs, {})
    assert key != cache_mod.scan_key(_lm(load_in_4bit=True).cache_key(), seqs, {})
    assert key != cache_mod.scan_key(_lm(dtype=torch.bfloat16).cache_key(), seqs, {})
    assert key != cache_mod.scan_key(_lm(device=torch.device("cuda", 1)).cache_key(), seqs, {})
    # a model on another GPU of the same kind computes the same numbers
    on0, on1 = _lm(device=torch.device("cuda", 0)), _lm(device=torch.device("cuda", 1))
    assert on0.cache_key() == on1.cache_key()
    # an unquantised CPU model keys as before quantisation and device were keyed
    old_head = {"v": cache_mod.SCAN_VERSION, "model": "m", "dtype": "torch.float32"}
    h = hashlib.sha256(json.dumps(old_head, sort_keys=True).encode())
    h.update(torch.tensor([1, 2, 3], dtype=torch.int64).numpy().tobytes() + b"|")
    assert key == h.hexdigest()[:32]


def test_request_cache_identity_is_the_models_numbers():
    from layerprune.job import JobState
    from layerprune.plan import PruningPlan

    job = JobState(None, 0, 0.0, None, lm=_lm(load_in_4bit=True), plan=PruningPlan("none"))
    identity = job.identity()
    assert {k: identity[k] for k in ("base", "dtype", "load_in_4bit", "device")} == {
        "base": "m",
        "dtype": "torch.float32",
        "load_in_4bit": True,
        "device": "cpu",
    }


def test_new_text_settings_leave_run_store_keys_alone_at_their_defaults():
    """A job at the new text settings' defaults keys as the same job did before they existed
    (its config without them); set, they change the key."""
    from omegaconf import OmegaConf

    from layerprune.store import job_key

    def resolved(overrides):
        return OmegaConf.to_container(compose(["benchmark=perplexity", *overrides]), resolve=True)

    plain = resolved([])
    before = copy.deepcopy(plain)  # the same job as configs were before the text settings
    del before["calibration"]["allow_fewer"], before["calibration"]["hub"]
    for entry in before["benchmark"]["perplexity"]:
        del entry["hub"]
    assert job_key(plain) == job_key(before)
    assert job_key(plain) != job_key(resolved(["calibration.allow_fewer=true"]))
    assert job_key(plain) != job_key(resolved(["calibration=c4_hub"]))


# ---------------------------------------------------------------- 4-bit


class _QuantState:
    def __init__(self, shape):
        self.shape = torch.Size(shape)


def test_count_parameters_counts_a_4bit_weight_by_its_quant_state_shape():
    layer = torch.nn.Linear(6, 4)
    packed = torch.nn.Parameter(torch.zeros(12, 1, dtype=torch.uint8), requires_grad=False)
    packed.quant_state = _QuantState((4, 6))  # 24 weights, two per byte
    layer.weight = packed
    assert count_parameters(layer) == 4 * 6 + 4


@pytest.mark.slow
def test_count_parameters_of_a_real_bitsandbytes_4bit_model(tmp_path):
    from layerprune.config import ModelConfig
    from layerprune.models.random_model import random_model

    cfg = tiny_config()
    model = random_model(cfg.random, torch.float32)
    model.save_pretrained(tmp_path)
    byte_tokenizer().save_pretrained(tmp_path)
    full = count_parameters(model)
    four = ModelConfig(name="t", source="path", id=str(tmp_path), device="cpu", load_in_4bit=True)
    lm = load_model(four)
    weight = lm.adapter.blocks(lm.model)[0].mlp.down_proj.weight
    assert type(weight).__name__ == "Params4bit"
    assert sum(p.numel() for p in lm.model.parameters()) < full  # packed storage
    assert count_parameters(lm.model) == full
    assert lm.cache_key()["load_in_4bit"] is True


def test_4bit_without_device_map_is_placed_on_the_jobs_device(monkeypatch, tmp_path):
    import transformers

    from layerprune.config import ModelConfig

    seen = {}

    def capture(where, **kwargs):
        seen.update(kwargs)
        raise OSError("captured")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: None)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", capture)
    cfg = ModelConfig(name="t", source="hub", id="x/y", device="cuda:1", load_in_4bit=True)
    with pytest.raises(LayerpruneError, match="captured"):
        load_model(cfg)
    assert seen["device_map"] == {"": "cuda:1"}
    seen.clear()
    with pytest.raises(LayerpruneError):
        load_model(ModelConfig(name="t", source="hub", id="x/y", device_map="auto"))
    assert seen["device_map"] == "auto"


# ---------------------------------------------------------------- sweeps


@pytest.mark.parametrize(
    ("gpus", "device", "job", "want"),
    [
        (4, "auto", 0, "cuda:0"),
        (4, "auto", 6, "cuda:2"),
        (1, "auto", 6, "auto"),  # one GPU: nothing to spread
        (0, "auto", 3, "auto"),  # no GPU
        (4, "cuda:3", 1, "cuda:3"),  # a named device is kept
        (4, "cpu", 1, "cpu"),
        (4, "auto", None, "auto"),  # not in a sweep
    ],
)
def test_parallel_jobs_are_pinned_one_gpu_each(monkeypatch, gpus, device, job, want):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert pinned_device(device, job) == want


@pytest.fixture
def lock_env(monkeypatch):
    atomic._flock_works.cache_clear()
    yield monkeypatch
    atomic._flock_works.cache_clear()


@pytest.mark.parametrize("kind", ["flock", "soft"])
def test_cache_lock_kinds_exclude_a_second_holder(tmp_path, lock_env, kind):
    from filelock import SoftFileLock, Timeout

    lock_env.setenv("LAYERPRUNE_LOCK", kind)
    first, second = atomic.cache_lock(tmp_path / "entry"), atomic.cache_lock(tmp_path / "entry")
    assert isinstance(first, SoftFileLock) == (kind == "soft")
    assert first.lock_file == str(tmp_path / "entry.lock")
    with first, pytest.raises(Timeout):
        second.acquire(timeout=0.05)
    with second:  # released: the next one gets it
        pass


def test_cache_lock_falls_back_to_soft_without_flock(tmp_path, lock_env):
    import fcntl

    from filelock import SoftFileLock

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    lock_env.delenv("LAYERPRUNE_LOCK", raising=False)
    assert atomic.lock_kind(tmp_path) == "flock"  # this filesystem has flock
    atomic._flock_works.cache_clear()
    lock_env.setattr(fcntl, "flock", no_flock)
    assert atomic.lock_kind(tmp_path / "nfs") == "soft"
    assert isinstance(atomic.cache_lock(tmp_path / "nfs" / "x"), SoftFileLock)
    assert not list((tmp_path / "nfs").iterdir())  # the probe file is gone
    lock_env.setenv("LAYERPRUNE_LOCK", "lustre")
    with pytest.raises(LayerpruneError, match="expected one of"):
        atomic.lock_kind(tmp_path)


def test_scan_cache_under_a_soft_lock(tmp_path, lock_env):
    lock_env.setenv("LAYERPRUNE_LOCK", "soft")
    from layerprune.scan.residual import Scan

    calls = []

    def compute():
        calls.append(1)
        return Scan(2, {"angular/last": torch.zeros(3, 3)}, 3, 12)

    first = cache_mod.cached_scan("k", compute, tmp_path)
    again = cache_mod.cached_scan("k", compute, tmp_path)
    assert (first[1], again[1], len(calls)) == (False, True, 1)
    assert not (tmp_path / "k.pt.lock").exists()  # a soft lock file is removed on release
