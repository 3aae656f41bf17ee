"""The shared-prefix scorer returns stock HFLM's answers; the request cache never scores twice;
chunked perplexity equals the whole-logits computation."""

from __future__ import annotations

import itertools
import random
import tempfile
from pathlib import Path

import pytest
import torch
from lm_eval import simple_evaluate
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from omegaconf import OmegaConf

from layerprune import pipeline
from layerprune.config import validate
from layerprune.evaluate.harness import _offline_task_manager, evaluate_tasks
from layerprune.evaluate.perplexity import Windows, perplexity
from layerprune.evaluate.prefix_plan import (
    ALIGN,
    ALIGN_MIN,
    Packed,
    _layout,
    group_requests,
    pack,
    plan_batches,
    plan_chunks,
    to_request,
)
from layerprune.evaluate.scorers import SharedScorer, StockScorer
from layerprune.evaluate.shared_prefix import CountingLM, SharedPrefixLM
from layerprune.models.adapter import output_logits
from layerprune.models.load import load_model
from layerprune.surgery.blocks import remove_blocks
from layerprune.surgery.sublayers import prune_sublayers
from tests.conftest import FAMILIES, compose, have_asset, needs_assets, tiny_config

ALL_FAMILIES = FAMILIES + ["gemma3_text"]
TASKS = [
    ("arc_easy", 0, 3),
    ("hellaswag", 0, 2),
    ("winogrande", 0, 3),
    ("piqa", 0, 2),
    ("boolq", 0, 2),
    ("lambada_openai", 0, 3),
    # two MMLU subjects (the group has 57), 5-shot: long prompts shared by their questions
    ("mmlu_anatomy", 5, 2),
    ("mmlu_virology", 5, 2),
]
needs_data = needs_assets("benchmarks", "text")


class _Recorder(LM):
    """Collects the log-likelihood requests lm-eval builds for a task (answers are dummies)."""

    def __init__(self):
        super().__init__()
        self.requests: list[Instance] = []

    def loglikelihood(self, requests, disable_tqdm=False):
        self.requests += requests
        return [(0.0, False)] * len(requests)

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise AssertionError("not used by these tasks")

    def generate_until(self, requests, disable_tqdm=False):
        raise AssertionError("not used by these tasks")


@pytest.fixture(scope="module")
def task_requests() -> list[Instance]:
    """The requests of ``TASKS`` as lm-eval builds them (model-independent: every tiny model
    shares the byte tokenizer)."""
    if not (have_asset("benchmarks") and have_asset("text")):
        pytest.skip("benchmark assets not built: run `make assets`")
    rec = _Recorder()
    with tempfile.TemporaryDirectory() as tmp:
        names = [t for t, _, _ in TASKS if not t.startswith("mmlu_")] + ["mmlu"]
        manager = _offline_task_manager(names, Path(tmp))
        for name, shots, limit in TASKS:
            simple_evaluate(
                model=rec,
                tasks=[name],
                num_fewshot=shots,
                limit=limit,
                task_manager=manager,
                bootstrap_iters=0,
                verbosity="ERROR",
            )
    return rec.requests


def _variant(family: str, variant: str):
    """A tiny model of ``family``: plain, block-pruned, sublayer-pruned or with LoRA."""
    lm = load_model(tiny_config(family))
    model = lm.model
    if variant == "blocks":
        remove_blocks(model, lm.adapter, [2, 3])
    elif variant == "sublayers":  # block 0's attention goes: the cache must still count positions
        prune_sublayers(model, lm.adapter, attention=[0, 4], mlp=[2, 4])
    elif variant == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "down_proj"]))
        torch.manual_seed(1)
        with torch.no_grad():  # a trained-looking adapter: B is zero at initialisation
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
        model.eval()
    return model, lm.tokenizer


def _greedy_requests(model, lm: LM, requests: list[Instance], n: int = 4) -> list[tuple]:
    """Token-level requests whose continuation is the model's own greedy choice (3 tokens), so
    ``is_greedy`` must be True; built on the tokens, as byte-level text may not round-trip."""
    out = []
    for inst in requests[:n]:
        context = lm.tok_encode(inst.args[0])[-(lm.max_length - 3) :]  # as the model sees it
        with torch.no_grad():
            gen = model.generate(torch.tensor([context]), max_new_tokens=3, do_sample=False)
        out.append((None, context, gen[0, len(context) :].tolist()))
    return out


def _kw(model, tok) -> dict:
    """HFLM arguments for both scorers. The log-softmax and its sum run in float64 (the same
    code path as float32, for both): random byte-level models give continuations of ~1,000 nats,
    where one float32 rounding step of stock's own sum is 6e-5 to 1.2e-4, so float32 sums
    cannot be compared to 1e-4. The real-model benchmark compares float32 sums."""
    return {
        "pretrained": model,
        "tokenizer": tok,
        "batch_size": 16,
        "device": "cpu",
        "softmax_dtype": torch.float64,
    }


def _compare(stock: LM, shared: LM, requests: list[Instance], tokens: list[tuple]) -> None:
    """Every answer of the shared scorer equals stock's: log-likelihood to 1e-4, is_greedy."""
    a = stock.loglikelihood(requests, disable_tqdm=True) + stock._loglikelihood_tokens(tokens)
    b = shared.loglikelihood(requests, disable_tqdm=True) + shared._loglikelihood_tokens(tokens)
    assert len(a) == len(b) == len(requests) + len(tokens)
    diffs = [abs(x[0] - y[0]) for x, y in zip(a, b, strict=True)]
    assert max(diffs) <= 1e-4, max(diffs)
    assert [x[1] for x in a] == [y[1] for y in b]
    assert all(greedy for _, greedy in b[len(requests) :])


@needs_data
@pytest.mark.parametrize("variant", ["plain", "blocks", "sublayers", "lora"])
@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_shared_scoring_equals_stock(family, variant, task_requests):
    model, tok = _variant(family, variant)
    stock, shared = CountingLM(**_kw(model, tok)), SharedPrefixLM(**_kw(model, tok))
    _compare(stock, shared, task_requests, _greedy_requests(model, stock, task_requests))
    assert shared._cache_ok  # the cached path ran, not the stock fallback


@needs_data
@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_contexts_longer_than_max_length(family, task_requests):
    """Left truncation as stock: the window slides, so prefixes are shared less."""
    model, tok = _variant(family, "plain")
    kw = _kw(model, tok)
    long = [r for r in task_requests if len(tok(r.args[0]).input_ids) > 96]
    requests = long[:40]
    assert len(requests) >= 10  # enough contexts really cut on the left
    stock, shared = CountingLM(max_length=96, **kw), SharedPrefixLM(max_length=96, **kw)
    _compare(stock, shared, requests, _greedy_requests(model, stock, requests))


@needs_data
def test_sliding_window_without_layer_types(task_requests):
    """Mistral's one sliding mask (no ``layer_types``): a window much shorter than the
    contexts, so the tree mask must drop the keys it no longer sees."""
    model, tok = _variant("mistral", "plain")
    model.config.sliding_window = 16
    stock, shared = CountingLM(**_kw(model, tok)), SharedPrefixLM(**_kw(model, tok))
    assert shared._windows == {None: 16}
    requests = task_requests[:40]
    _compare(stock, shared, requests, _greedy_requests(model, stock, requests))
    assert shared._cache_ok


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_aligned_options_score_as_stock(family):
    """Rows with gap tokens (long options aligned, see ``prefix_plan``): the gaps are masked
    from every option, so each answer is still stock's (Gemma3: sliding layers too)."""
    model, tok = _variant(family, "plain")
    g = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(3, 200, (n,), generator=g).tolist()  # noqa: E731
    tokens = []
    for ctx in (ids(20), ids(37)):
        tokens += [(None, ctx, ids(n)) for n in (40, 33, 3, 50)]
    stock, shared = CountingLM(**_kw(model, tok)), SharedPrefixLM(**_kw(model, tok))
    groups = group_requests(
        [to_request(i, c, x, shared.max_length) for i, (_, c, x) in enumerate(tokens)]
    )
    assert all(pack(grp, 0).gaps for grp in groups)  # gaps in every row
    a, b = stock._loglikelihood_tokens(tokens), shared._loglikelihood_tokens(tokens)
    assert max(abs(x[0] - y[0]) for x, y in zip(a, b, strict=True)) <= 1e-4
    assert [x[1] for x in a] == [y[1] for y in b]
    assert shared._cache_ok


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_head_buffers_give_the_heads_own_log_probs(family):
    """The LM head into kept buffers (float32, no peft head) gives bitwise what the model's
    head and a log-softmax give (Gemma3: with its final soft-capping), also for fewer rows
    than the matmul is run on, and the next call reuses the buffers."""
    model, tok = _variant(family, "plain")
    if family == "gemma3_text":
        model.config.final_logit_softcapping = 3.0
    lm = SharedPrefixLM(pretrained=model, tokenizer=tok, batch_size=16, device="cpu")
    assert lm._plain_head
    hidden = torch.randn(40, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = torch.log_softmax(output_logits(model, hidden), dim=-1)
    assert torch.equal(lm._log_probs(hidden), expected)
    buffer = lm._buffers[1].data_ptr()
    assert torch.equal(lm._log_probs(hidden[:20]), expected[:20])
    assert torch.equal(lm._log_probs(hidden[:3]), expected[:3])  # run as MIN_CALL_TOKENS rows
    assert lm._buffers[1].data_ptr() == buffer


def test_plan_shares_prefixes_and_rows():
    """Options of one question form one group; equal model inputs are one row; a chunk holds
    questions whose prefix is shared; a question shares nothing joins the others' batch."""
    shots_a, shots_b = list(range(100, 160)), list(range(200, 260))
    reqs = [
        to_request(0, shots_a + [1, 2, 3], [7], 1000),
        to_request(1, shots_a + [1, 2, 3], [8], 1000),  # same input as 0: one row
        to_request(2, shots_a + [4, 5], [7, 9], 1000),  # context: shots_a + [4]
        to_request(3, shots_a + [4, 5], [5, 9], 1000),
        to_request(4, [9, 9, 9], [1], 1000),
        to_request(5, shots_b + [3], [1], 1000),
        to_request(6, shots_b + [6, 6], [1], 1000),
    ]
    groups = group_requests(reqs)  # sorted by context: [9, 9] first
    assert [g.context for g in groups] == [
        (9, 9),
        (*shots_a, 1, 2),
        (*shots_a, 4),
        tuple(shots_b),
        (*shots_b, 6),
    ]
    assert [len(rs) for rs in groups[1].rows.values()] == [2]  # 0 and 1 share a row
    assert groups[1].folded and not groups[2].folded
    # each few-shot prompt is cached once for its questions; [9, 9] shares nothing
    chunks = plan_chunks(groups, 8)
    assert [(c.prefix, len(c.groups)) for c in chunks] == [(2, 1), (60, 2), (60, 2)]
    # when joining may cost up to 100 recomputed positions: one chunk, prefix 0
    assert [(c.prefix, len(c.groups)) for c in plan_chunks(groups, 100)] == [(0, 5)]
    # questions that share nothing are one chunk (then batched)
    alone = group_requests([to_request(i, [i, 1, 2], [3], 100) for i in range(5)])
    assert [(c.prefix, len(c.groups)) for c in plan_chunks(alone, 8)] == [(0, 5)]
    truncated = to_request(5, list(range(50)), [60, 61], max_length=10)
    assert truncated.inp == tuple(range(41, 50)) + (60,) and truncated.start == 8


def test_pack_runs_what_options_share_once():
    """One packed row: the context past the prefix, then the options as a token trie: each
    option adds only the tokens it does not share with an earlier one, at the positions that
    follow what it shares, and reads the shared ones where they already are."""
    ctx = [5, 6, 7]
    options = [[1, 2, 3, 4, 5], [1, 2, 3, 9, 9], [1, 2], [1, 2, 3, 4, 5, 6]]
    (group,) = group_requests([to_request(i, ctx, o, 100) for i, o in enumerate(options)])
    row = pack(group, prefix=1)
    # context (5 cached) 6; 7 is every option's first scored input, then 1 2 3 4 (option 0);
    # option 1 adds 9 after its 7 1 2 3, option 3 adds 5 after 7 1 2 3 4, option 2 adds none
    assert row.tokens == (6, 7, 1, 2, 3, 4, 9, 5)
    assert row.position == (0, 1, 2, 3, 4, 5, 5, 6)
    assert row.runs == ((0, 1, -1), (1, 5, 0), (6, 1, 4), (7, 1, 5))
    paths = {rs[0].index: path for path, rs in row.options}
    assert paths == {0: (1, 2, 3, 4, 5), 1: (1, 2, 3, 4, 6), 2: (1, 2), 3: (1, 2, 3, 4, 5, 7)}
    for path, rs in row.options:  # each option's scored inputs, read along its path
        assert tuple(row.tokens[k] for k in path) == rs[0].scored
        assert [row.position[k] for k in path] == list(range(1, 1 + len(path)))
    assert row.scored == 7 and row.gaps == 0 and not row.chain
    (alone,) = group_requests([to_request(0, ctx, [1, 2], 100)])
    assert pack(alone, prefix=1).chain  # one option: one causal sequence, no tree mask


def test_pack_aligns_long_options_like_stock():
    """Every scored token of an option of ALIGN_MIN tokens or more sits a multiple of ALIGN
    from its index in stock's row (so attention sums its keys in the same SIMD lanes), behind
    masked gap tokens, also where it reads tokens another option added; the order needs the
    fewest gaps; short options are packed tight."""
    ctx = [5, 6, 7]
    a = list(range(100, 140))
    options = [a, a[:20] + list(range(200, 213)), [9, 9, 9], list(range(300, 350))]
    (group,) = group_requests([to_request(i, ctx, o, 1000) for i, o in enumerate(options)])
    row = pack(group, prefix=1)
    tail = len(group.context) - 1  # context (5, 6): 7 is the first scored position's input
    in_runs = {k for start, n, _ in row.runs for k in range(start, start + n)}
    for path, rs in row.options:
        assert tuple(row.tokens[k] for k in path) == rs[0].scored
        if len(path) >= ALIGN_MIN:
            assert all((k - tail - t) % ALIGN == 0 for t, k in enumerate(path))
    assert row.gaps and all(row.tokens[k] == 0 for k in range(len(row.tokens)) if k not in in_runs)
    fewest = min(
        sum(_layout([s for s, _ in order], ALIGN, ALIGN_MIN)[2])
        for order in itertools.permutations(group.rows.items())
    )
    assert row.gaps == fewest
    assert row.scored == 40 + 12 + 2 + 49  # shared: 7 (all), 7 + a[:20] (the first two)
    # short options only: no gaps
    short = group_requests([to_request(i, ctx, [i + 1] * 5, 1000) for i in range(3)])
    assert pack(short[0], prefix=1).gaps == 0
    assert pack(group, prefix=1, align=0).gaps == 0


def _row(length: int) -> Packed:
    return Packed((1,) * length, tuple(range(length)), ((0, length, -1),), ())


def _plan_cost(calls, call_tokens: int) -> float:
    return sum(len(c) * len(c[0].tokens) + call_tokens for c in calls)


def test_plan_batches_runs_the_fewest_positions():
    """The cut equals the best of every cut of the sorted rows into consecutive calls (brute
    force), keeps each row once, longest first, and stays within the cap."""
    rng = random.Random(0)
    for _ in range(40):
        rows = [_row(rng.randint(1, 60)) for _ in range(rng.randint(1, 8))]
        tokens, call = rng.choice([64, 128, 1000]), rng.randint(0, 30)
        calls = plan_batches(rows, tokens, call)
        flat = [r for c in calls for r in c]
        assert sorted(map(id, flat)) == sorted(map(id, rows))
        assert [len(r.tokens) for r in flat] == sorted((len(r.tokens) for r in rows), reverse=True)
        assert all(_fits(c, tokens) for c in calls)
        ordered = sorted(rows, key=lambda r: len(r.tokens), reverse=True)
        best = min(
            _plan_cost(cut, call) for cut in _cuts(ordered) if all(_fits(c, tokens) for c in cut)
        )
        assert _plan_cost(calls, call) == pytest.approx(best)
    # padding costs what it pads: a long row and a short one run apart unless a call costs more
    long, short = _row(100), _row(10)
    assert [len(c) for c in plan_batches([short, long], 1024, call_tokens=20)] == [1, 1]
    assert [len(c) for c in plan_batches([short, long], 1024, call_tokens=200)] == [2]


def _fits(call, tokens: int) -> bool:
    """A call within the padded-token cap (a row alone always fits)."""
    return len(call) == 1 or len(call) * len(call[0].tokens) <= tokens


def _cuts(rows):
    """Every split of ``rows`` into consecutive non-empty runs."""
    if not rows:
        yield []
        return
    for i in range(1, len(rows) + 1):
        for rest in _cuts(rows[i:]):
            yield [rows[:i], *rest]


@needs_data
def test_request_cache_never_scores_twice(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERPRUNE_EVAL_CACHE", str(tmp_path / "cache"))
    lm = load_model(tiny_config("qwen2"))
    calls = []  # decoder forwards: both scorers run every position through it
    lm.model.get_decoder().register_forward_pre_hook(lambda *a: calls.append(1))
    identity = {"base": lm.identity, "removed_blocks": []}
    tasks = [("arc_easy", 0, 4)]

    def scored(tasks, scorer=None):
        scorer = scorer or SharedScorer()
        m = scorer.lm(lm.model, lm.tokenizer)
        return evaluate_tasks(m, tasks, cache=scorer.cache_prefix(identity, m))

    first = scored(tasks)["arc_easy"]
    assert first.misses == first.requests == 16 and first.hits == 0 and calls
    calls.clear()
    again = scored(tasks)["arc_easy"]
    assert not calls and again.hits == 16 and again.misses == 0
    assert again.metrics == first.metrics
    more = scored([("arc_easy", 0, 6)])
    assert (more["arc_easy"].hits, more["arc_easy"].misses) == (16, 8)  # a larger limit
    stock = scored(tasks, StockScorer())
    assert stock["arc_easy"].misses == 16  # stock and shared answers are kept apart
    changed = scored(tasks, SharedScorer(call_tokens=64))
    assert changed["arc_easy"].misses == 16  # a profile setting changed: its own cache


@needs_data
def test_jobs_share_the_request_cache_by_what_the_model_is(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERPRUNE_EVAL_CACHE", str(tmp_path / "cache"))
    base = ["model=tiny-llama", "benchmark=arc_easy", "benchmark.tasks.0.limit=3"]

    def job(*overrides):
        cfg = compose([*base, *overrides])
        out = tmp_path / str(len(list(tmp_path.iterdir())))
        return pipeline.run(validate(cfg), OmegaConf.to_container(cfg), out).to_dict()

    unpruned = job("pruning_method=none", "fraction=0")
    assert unpruned["eval_cache"] == {"hits": 0, "misses": 12}
    zero = job("pruning_method=last_layers", "fraction=0")  # the fraction-0 point of a method
    assert zero["eval_cache"] == {"hits": 12, "misses": 0}
    assert zero["metrics"] == unpruned["metrics"]
    pruned = job("pruning_method=last_layers", "fraction=0.25")
    assert pruned["eval_cache"] == {"hits": 0, "misses": 12}
    again = job("pruning_method=last_layers", "fraction=0.25", "seed=1")  # a rerun, same model
    assert again["eval_cache"] == {"hits": 12, "misses": 0}
    one_more = job("pruning_method=last_layers", "fraction=0.375")  # one more block removed
    assert one_more["eval_cache"] == {"hits": 0, "misses": 12}


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_chunked_perplexity_equals_whole_logits(family):
    lm = load_model(tiny_config(family))
    if family == "gemma3_text":  # final soft-capping applies after the head: keep it in play
        lm.model.config.final_logit_softcapping = 3.0
    ids = torch.randint(0, 256, (300,), generator=torch.Generator().manual_seed(0))
    whole = perplexity(lm.model, ids, Windows(64, 48, 3), head_chunk=0)
    chunked = perplexity(lm.model, ids, Windows(64, 48, 3), head_chunk=272 * 5)  # 5 positions
    assert chunked.tokens == whole.tokens == 299
    assert chunked.loss == pytest.approx(whole.loss, rel=1e-5)


@needs_data
@pytest.mark.parametrize("drops", ["cache", "mask"])
def test_model_that_cannot_continue_a_cache_falls_back_to_stock(drops, task_requests, caplog):
    """A decoder forward that ignores the cache (here: drops it, an error) or the tree mask
    (wrong numbers, no error) is caught on the first request; every answer then comes from
    stock's own path, and a log line says so."""
    model, tok = _variant("llama", "plain")
    decoder = model.get_decoder()
    forward = decoder.forward

    def no_cache(*args, past_key_values=None, cache=None, position_ids=None, **kwargs):
        return forward(*args, **kwargs)

    def no_mask(*args, attention_mask=None, **kwargs):
        return forward(*args, **kwargs)

    decoder.forward = no_cache if drops == "cache" else no_mask
    stock, shared = CountingLM(**_kw(model, tok)), SharedPrefixLM(**_kw(model, tok))
    requests = task_requests[:12]
    with caplog.at_level("WARNING", logger="layerprune.evaluate.shared_prefix"):
        b = shared.loglikelihood(requests, disable_tqdm=True)
    assert shared._cache_ok is False
    assert "shared-prefix scoring off" in caplog.text
    assert b == stock.loglikelihood(requests, disable_tqdm=True)
