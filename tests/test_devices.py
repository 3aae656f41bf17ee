"""Every function that meets model outputs, on CUDA devices emulated on the CPU
(``tests/fake_gpus.py``: torch's fake tensors check the devices, the CPU computes the values):
one GPU, and a tiny model split over two (``device_map`` through accelerate's own
``dispatch_model``). Each gives the numbers it gives on the CPU."""

from __future__ import annotations

import copy

import pytest
import torch
from accelerate import dispatch_model
from omegaconf import OmegaConf

from layerprune import paths, pipeline
from layerprune.config import validate
from layerprune.data.calibration import batches
from layerprune.evaluate.perplexity import Windows, perplexity
from layerprune.evaluate.shared_prefix import CountingLM, SharedPrefixLM
from layerprune.methods.discrepancy import METRICS as DISCREPANCIES
from layerprune.methods.discrepancy import discrepancy_sum
from layerprune.methods.ppl import PerplexityEvaluator
from layerprune.methods.search import FastEvaluator, candidates
from layerprune.models.load import load_model
from layerprune.scan.residual import scan_model
from tests.conftest import compose, needs_assets, tiny_config
from tests.fake_gpus import FakeGPUs, on_gpu

LAYERS = 4
SEQS = [list(range(5, 25)), list(range(30, 40)), list(range(60, 96)), [7, 8, 9, 10, 11]]


def _device_map() -> dict[str, str]:
    """Embeddings and blocks 0, 1 on cuda:0; the rest, the final norm and the head on cuda:1."""
    last = "cuda:1"
    blocks = {f"model.layers.{i}": "cuda:0" if i < LAYERS // 2 else last for i in range(LAYERS)}
    return {
        "model.embed_tokens": "cuda:0",
        "model.rotary_emb": "cuda:0",
        **blocks,
        "model.norm": last,
        "lm_head": last,
    }


@pytest.fixture(params=["one_gpu", "split"])
def on_gpus(request):
    """``(cpu_lm, gpu_model)``: a tiny Llama on the CPU, and the same weights on fake GPUs
    (inside ``FakeGPUs`` for the whole test)."""
    cpu = load_model(tiny_config("llama", layers=LAYERS))
    model = copy.deepcopy(cpu.model)
    with FakeGPUs():
        if request.param == "split":
            model = dispatch_model(model, device_map=_device_map())
        else:  # as the loader does: ``.to``, new Parameters (a GPUTensor is no CPU tensor's data)
            torch.__future__.set_overwrite_module_params_on_conversion(True)
            try:
                model = model.to("cuda:0")
            finally:
                torch.__future__.set_overwrite_module_params_on_conversion(False)
        yield cpu, model


def _split(lm):
    """``lm`` (a ``LoadedModel``) dispatched over cuda:0 / cuda:1 (``_device_map``)."""
    from dataclasses import replace

    model = dispatch_model(lm.model, device_map=_device_map())
    return replace(lm, model=model, device=torch.device("cuda:0"))


def _ids(n: int = 1, t: int = 16, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (2, t), generator=g) for _ in range(n)]


# -- the functions that meet model outputs, on tensors placed by hand -----------------------


@pytest.mark.parametrize("metric", DISCREPANCIES)
def test_discrepancy_on_a_gpu(metric):
    g = torch.Generator().manual_seed(0)
    z = 3 * torch.randn(2, 5, 300, generator=g)
    pruned = z + 0.1 * torch.randn(z.shape, generator=g)
    ref = torch.log_softmax(z, -1) if metric in ("js", "js_code", "kl") else z
    want = discrepancy_sum(metric, ref, pruned)
    with FakeGPUs():
        got = discrepancy_sum(metric, on_gpu(ref, 1), on_gpu(pruned, 1))
    assert isinstance(got, float)
    assert got == pytest.approx(want, rel=1e-6)


def test_scan_statistics_with_states_on_two_gpus():
    """The scan's per-batch sums from states spread over cuda:0 / cuda:1 (a split model) and
    a mask on cuda:0 (the input embedding's) equal those of the same states on the CPU."""
    from layerprune.scan.residual import batch_sums

    g = torch.Generator().manual_seed(0)
    states = [torch.randn(3, 6, 8, generator=g) for _ in range(5)]
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4])
    want = batch_sums(states, mask)
    with FakeGPUs():
        spread = [on_gpu(s, 0 if i < 3 else 1) for i, s in enumerate(states)]
        got = batch_sums(spread, on_gpu(mask, 0))
    assert got.keys() == want.keys()
    for key, total in want.items():
        assert got[key].device == torch.device("cpu")
        torch.testing.assert_close(got[key], total)


def test_ppl_loss_with_outputs_on_the_last_gpu():
    """The ppl criterion's loss: final hidden states and the head on cuda:1, the calibration
    tokens on cuda:0 (where the embeddings are)."""
    from layerprune.methods.ppl import next_token_losses

    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    final, ids = torch.randn(2, 7, 8, generator=g), torch.randint(0, 50, (2, 7), generator=g)
    want = float(sum(next_token_losses(head, final, ids)))
    with torch.no_grad():
        hand = torch.nn.functional.cross_entropy(
            head(final[:, :-1]).reshape(-1, 50), ids[:, 1:].reshape(-1), reduction="sum"
        )
    assert want == pytest.approx(float(hand), rel=1e-6)
    with FakeGPUs():
        gpu_head = copy.deepcopy(head)
        gpu_head.weight = torch.nn.Parameter(on_gpu(head.weight.data, 1), requires_grad=False)
        got = float(sum(next_token_losses(gpu_head, on_gpu(final, 1), on_gpu(ids, 0))))
    assert got == pytest.approx(want, rel=1e-6)


# -- a tiny model on one GPU and split over two ---------------------------------------------


def test_scan(on_gpus):
    cpu, model = on_gpus
    data = batches(SEQS, 3, 256)
    want = scan_model(cpu.model, cpu.adapter, data, progress=False)
    got = scan_model(model, cpu.adapter, data, progress=False)
    assert (got.num_sequences, got.num_tokens) == (want.num_sequences, want.num_tokens)
    for key, d in want.distances.items():
        assert got.distances[key].device == torch.device("cpu")
        torch.testing.assert_close(got.distances[key], d, equal_nan=True, rtol=1e-5, atol=1e-6)


def test_finercut_search(on_gpus, metric="js"):
    """FinerCut's fast evaluator with its default metric: scores, a commit, scores again (the
    hidden-state metrics meet nothing else: ``test_discrepancy_on_a_gpu``)."""
    cpu, model = on_gpus
    ids = _ids()
    cands = candidates(LAYERS, "sublayer")[1::2]
    want = FastEvaluator(cpu.model, cpu.adapter, ids, metric)
    got = FastEvaluator(model, cpu.adapter, [b.to("cuda:0") for b in ids], metric)
    assert got.scores(cands) == pytest.approx(want.scores(cands), rel=1e-4, abs=1e-7)
    want.commit(cands[1])
    got.commit(cands[1])
    assert got.scores(cands[2:]) == pytest.approx(want.scores(cands[2:]), rel=1e-4, abs=1e-7)


def test_ppl_search(on_gpus):
    cpu, model = on_gpus
    ids = _ids()
    cands = candidates(LAYERS, "block")[1:]
    want = PerplexityEvaluator(cpu.model, cpu.adapter, ids).scores(cands)
    got = PerplexityEvaluator(model, cpu.adapter, [b.to("cuda:0") for b in ids]).scores(cands)
    assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("head_chunk", [0, 1 << 12])
def test_perplexity(on_gpus, head_chunk):
    cpu, model = on_gpus
    ids = torch.randint(0, 256, (40,), generator=torch.Generator().manual_seed(0))
    w = Windows(16, 12, 2)
    want = perplexity(cpu.model, ids, w, head_chunk=head_chunk)
    got = perplexity(model, ids, w, head_chunk=head_chunk)
    assert got.tokens == want.tokens
    assert got.loss == pytest.approx(want.loss, rel=1e-5)


def test_shared_prefix_scorer(on_gpus):
    """Questions sharing a prefix, each with options: the scorer on GPUs gives the CPU stock
    answers (its prefix cache, tree mask, scored positions and LM head across devices)."""
    cpu, model = on_gpus
    g = torch.Generator().manual_seed(0)
    shared = torch.randint(3, 250, (20,), generator=g).tolist()
    requests = []
    for q in range(2):
        question = shared + torch.randint(3, 250, (5 + q,), generator=g).tolist()
        for o in range(2):
            option = torch.randint(3, 250, (2 + o,), generator=g).tolist()
            requests.append((None, question, option))
    kw = {"tokenizer": cpu.tokenizer, "batch_size": 16}  # float32: the head's buffers
    want = CountingLM(pretrained=cpu.model, device="cpu", **kw)._loglikelihood_tokens(requests)
    scorer = SharedPrefixLM(pretrained=model, device="cuda:0", **kw)
    got = scorer._loglikelihood_tokens(requests)
    assert scorer._cache_ok
    assert [b for _, b in got] == [b for _, b in want]
    assert [a for a, _ in got] == pytest.approx([a for a, _ in want], abs=1e-4)


def test_fast_evaluator_shares_the_callers_weights():
    """FinerCut's evaluator swaps stand-ins into a copy of the modules, not of the weights: a
    model split over GPUs because it fills them has no room for a second copy."""
    lm = load_model(tiny_config("llama", layers=LAYERS))
    ev = FastEvaluator(lm.model, lm.adapter, _ids(), "js")
    ev.commit(candidates(LAYERS, "sublayer")[0])  # block 0's attention: a stand-in in the copy
    mine = dict(ev.model.named_parameters())
    assert all(p is mine[name] for name, p in lm.model.named_parameters() if name in mine)
    assert len(mine) < len(dict(lm.model.named_parameters()))  # the stand-in holds none
    assert len(list(lm.adapter.attention(lm.model, 0).parameters())) > 0  # the caller's kept


@pytest.mark.slow
@needs_assets("text")
def test_a_job_on_a_split_model(tmp_path, monkeypatch):
    """A whole job on the split model (load, scan, select, prune, perplexity, record) gives
    the CPU job's plan and numbers."""
    import layerprune.models.load as load

    monkeypatch.setattr(paths, "scan_cache_dir", lambda: tmp_path / "scans")
    cfg = compose(
        [
            "model=tiny-llama",
            f"model.random.num_hidden_layers={LAYERS}",
            "pruning_method=deeper_layers",
            "calibration=wiki",
            "calibration.num_sequences=2",
            "calibration.seq_len=32",
            "benchmark=perplexity",
            "benchmark.perplexity.0.max_tokens=256",
            "benchmark.perplexity.0.context_length=64",
            "benchmark.perplexity.0.stride=64",
            "fraction=0.25",
        ]
    )

    def job(name: str) -> dict:
        out = pipeline.run(validate(cfg), OmegaConf.to_container(cfg), tmp_path / name)
        return out.to_dict()

    want = job("cpu")
    monkeypatch.setattr(paths, "scan_cache_dir", lambda: tmp_path / "scans-gpu")
    loader = load.load_model
    monkeypatch.setattr(load, "load_model", lambda *a, **k: _split(loader(*a, **k)))
    with FakeGPUs():
        got = job("gpus")
    assert got["plan"]["removed_blocks"] == want["plan"]["removed_blocks"]
    assert got["metrics"]["wiki/tokens"] == want["metrics"]["wiki/tokens"]
    assert got["metrics"]["wiki/loss"] == pytest.approx(want["metrics"]["wiki/loss"], rel=1e-5)


@pytest.mark.parametrize("topk", [0, 8])
def test_kd_loss_student_split_teacher_on_another_gpu(on_gpus, topk):
    """Distillation's loss with every part on (KL, CE and the hidden-state term; or the
    teacher's cached top-k): the student split over cuda:0 / cuda:1 (or on cuda:0), the teacher
    on cuda:1 alone, the text on the CPU. It equals the loss of the same models on the CPU."""
    from layerprune.heal.kd import KD

    cpu, student = on_gpus
    teacher_cpu = load_model(tiny_config("llama", layers=LAYERS, seed=1)).model
    batch, rows = _ids(1, t=12)[0], torch.tensor([0, 1])
    kd = KD(ce_weight=0.5, hidden_weight=0.0 if topk else 0.25, teacher_topk=topk)
    kd._kept, kd._topk = list(range(LAYERS)), None
    if topk:
        logits = teacher_cpu(input_ids=batch).logits.float()
        kd._topk = tuple(x.detach() for x in torch.log_softmax(logits, -1).topk(topk, -1))
        kd._teacher = None
    with torch.no_grad():
        kd._teacher = kd._teacher if topk else teacher_cpu
        want, want_parts = kd.loss(cpu.model, batch, rows)
        if not topk:
            torch.__future__.set_overwrite_module_params_on_conversion(True)
            try:
                kd._teacher = copy.deepcopy(teacher_cpu).to("cuda:1")
            finally:
                torch.__future__.set_overwrite_module_params_on_conversion(False)
        got, parts = kd.loss(student, on_gpu(batch, 0), rows)  # as the loop: on the input device
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    assert parts == pytest.approx(want_parts, rel=1e-5)
