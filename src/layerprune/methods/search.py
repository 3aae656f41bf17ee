"""The search layer of methods that search (FinerCut, ppl): candidates, evaluators, the greedy
loop and the cache of their removal orders.

Candidates are attention / MLP sublayers or whole blocks (``granularity``). An evaluator
scores a list of candidates, each removed *together with* everything committed so far; the
greedy loop removes the best one per step, so the order is prefix-consistent (its first k
entries are the plan for any k) and one search serves every fraction of a sweep.

Two evaluators give the same scores:

- ``NaiveEvaluator`` (the official FinerCut code's way): a full forward pass per candidate,
  with the outputs of removed sublayers' ``o_proj`` / ``down_proj`` zeroed by hooks.
- ``FastEvaluator``: removed sublayers are replaced by stand-ins that compute nothing, and a
  candidate at block i starts from the cached residual stream entering block i (computed once
  per step; blocks before i are never re-run). Subclasses change only the score (``_score``).

``cached_search`` stores an order under ``$LAYERPRUNE_HOME/scans/<name>-<key>.json``, the key
hashing the model, the exact calibration tokens and what the method says decides its order;
a file lock makes racing jobs search once, and a stored order long enough serves any request.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from layerprune import atomic, paths
from layerprune.atomic import cache_lock
from layerprune.data.calibration import packed_sequences
from layerprune.data.text import Text
from layerprune.integrity import read_or_quarantine
from layerprune.methods.discrepancy import ON_HIDDEN, discrepancy_sum, units
from layerprune.models.adapter import BlockAdapter, input_device, output_logits
from layerprune.scan.cache import scan_key
from layerprune.scan.residual import block_output
from layerprune.surgery.skip import skip_sublayers

if TYPE_CHECKING:
    from layerprune.config import CalibrationConfig
    from layerprune.models.load import LoadedModel

GRANULARITIES = ("sublayer", "attention", "mlp", "block")
HEAD_ROWS = 128  # positions per LM-head chunk when scoring (measured best on CPU)


@dataclass(frozen=True)
class Candidate:
    kind: str  # "attention" | "mlp" | "block"
    block: int

    def parts(self) -> list[tuple[str, int]]:
        """The sublayers this candidate removes."""
        if self.kind == "block":
            return [("attention", self.block), ("mlp", self.block)]
        return [(self.kind, self.block)]


def candidates(num_blocks: int, granularity: str) -> list[Candidate]:
    """The candidate set, attention before MLP within a block (ties resolve in this order)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity '{granularity}' not in {GRANULARITIES}")
    kinds = {
        "sublayer": ["attention", "mlp"],
        "attention": ["attention"],
        "mlp": ["mlp"],
        "block": ["block"],
    }[granularity]
    return [Candidate(k, i) for i in range(num_blocks) for k in kinds]


class _Base:
    """What both evaluators share: the reference outputs and the output/metric arithmetic."""

    def __init__(self, model, adapter: BlockAdapter, batches: list[torch.Tensor], metric: str):
        self.model, self.adapter, self.batches, self.metric = model, adapter, batches, metric
        self.num_blocks = len(adapter.blocks(model))
        self.block_forwards = 0.0  # in units of whole blocks (a sublayer counts 1/2)
        self.reference = self._references()

    @torch.no_grad()
    def _references(self) -> list[torch.Tensor]:
        """The original's outputs (final hidden states or log-probabilities), once."""
        finals = [self._final_hidden_full(b) for b in self.batches]
        return [
            f if self.metric in ON_HIDDEN else torch.log_softmax(self._head(f).float(), -1)
            for f in finals
        ]

    @torch.no_grad()
    def _final_hidden_full(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.adapter.decoder(self.model)(input_ids=ids, use_cache=False)
        return out.last_hidden_state  # after the final norm

    def _head(self, final_hidden: torch.Tensor) -> torch.Tensor:
        return output_logits(self.model, final_hidden)

    @torch.no_grad()
    def _score(self, finals: list[torch.Tensor]) -> float:
        """Mean discrepancy from the original, given final hidden states (after the norm).

        Logit metrics run the LM head on a few positions at a time and score them at once, so
        the ``[positions, vocabulary]`` logits never exist whole (it is the search's largest
        fixed cost per candidate on small models with big vocabularies)."""
        total = 0.0
        for ref, final in zip(self.reference, finals, strict=True):
            if self.metric in ON_HIDDEN:
                total += discrepancy_sum(self.metric, ref, final)
                continue
            ref, final = ref.reshape(-1, ref.shape[-1]), final.reshape(-1, final.shape[-1])
            for s in range(0, final.shape[0], HEAD_ROWS):
                rows = slice(s, s + HEAD_ROWS)
                total += discrepancy_sum(self.metric, ref[rows], self._head(final[rows]))
        return total / sum(units(self.metric, b) for b in self.batches)


class NaiveEvaluator(_Base):
    """A full forward per candidate; removed sublayers' output projections zeroed by hooks."""

    def __init__(self, model, adapter, batches, metric):
        super().__init__(model, adapter, batches, metric)
        self.removed: list[Candidate] = []

    def _projection(self, kind: str, i: int):
        a = self.adapter
        return a.attention_out(self.model, i) if kind == "attention" else a.mlp_out(self.model, i)

    @torch.no_grad()
    def scores(self, remaining: list[Candidate]) -> list[float]:
        out = []
        for cand in remaining:
            parts = [p for c in [*self.removed, cand] for p in c.parts()]
            hooks = [
                self._projection(k, i).register_forward_hook(lambda m, a, o: torch.zeros_like(o))
                for k, i in parts
            ]
            try:
                outputs = [self._final_hidden_full(b) for b in self.batches]
            finally:
                for h in hooks:
                    h.remove()
            self.block_forwards += self.num_blocks * len(self.batches)
            out.append(self._score(outputs))
        return out

    def commit(self, cand: Candidate) -> None:
        self.removed.append(cand)


class FastEvaluator(_Base):
    """Removed sublayers cost nothing; a candidate at block i starts from the cached x(i)."""

    def __init__(self, model, adapter, batches, metric):
        # stand-ins are swapped into a copy of the modules, never the caller's; the weights
        # are shared, not copied (a model that fills its GPUs has no room for a second one)
        weights = {id(t): t for t in (*model.parameters(), *model.buffers())}
        model = copy.deepcopy(model, memo=weights)
        super().__init__(model, adapter, batches, metric)
        self.skipped: set[tuple[str, int]] = set()
        self.inputs: list[list[torch.Tensor]] = []  # [block][batch] residual entering the block
        self.kwargs: list[list[dict]] = []  # [block][batch] what the decoder passed the block
        self._cache_inputs()

    def _cost(self, i: int) -> float:
        """Block forwards that running block i costs now (skipped sublayers are free)."""
        return sum(0.5 for k in ("attention", "mlp") if (k, i) not in self.skipped)

    @torch.no_grad()
    def _cache_inputs(self) -> None:
        """One forward of the current model, recording each block's input and kwargs."""
        blocks = self.adapter.blocks(self.model)
        self.inputs = [[] for _ in blocks]
        self.kwargs = [[] for _ in blocks]

        def grab(i):
            def hook(module, args, kwargs):
                self.inputs[i].append(args[0] if args else kwargs["hidden_states"])
                self.kwargs[i].append({k: v for k, v in kwargs.items() if k != "hidden_states"})

            return hook

        handles = [
            b.register_forward_pre_hook(grab(i), with_kwargs=True) for i, b in enumerate(blocks)
        ]
        try:
            for ids in self.batches:
                self.adapter.decoder(self.model)(input_ids=ids, use_cache=False)
        finally:
            for h in handles:
                h.remove()
        self.block_forwards += sum(self._cost(i) for i in range(self.num_blocks)) * len(
            self.batches
        )

    @torch.no_grad()
    def _refresh_inputs(self, start: int) -> None:
        """After a removal at block ``start``: inputs of blocks <= start are still valid; only
        the later ones are recomputed, from the cached input of ``start``."""
        blocks = self.adapter.blocks(self.model)
        for b in range(len(self.batches)):
            h = self.inputs[start][b]
            for j in range(start, self.num_blocks - 1):
                h = block_output(blocks[j](h, **self.kwargs[j][b]))
                self.inputs[j + 1][b] = h
        cost = sum(self._cost(j) for j in range(start, self.num_blocks - 1))
        self.block_forwards += cost * len(self.batches)

    @torch.no_grad()
    def _run_from(self, start: int) -> list[torch.Tensor]:
        """Final hidden states when blocks start.. run on the cached inputs of block ``start``."""
        blocks = self.adapter.blocks(self.model)
        norm = self.adapter.final_norm(self.model)
        outputs = []
        for b in range(len(self.batches)):
            h = self.inputs[start][b]
            for j in range(start, self.num_blocks):
                h = block_output(blocks[j](h, **self.kwargs[j][b]))
            outputs.append(norm(h))
        self.block_forwards += sum(self._cost(j) for j in range(start, self.num_blocks)) * len(
            self.batches
        )
        return outputs

    def _swap(self, parts: list[tuple[str, int]]) -> dict:
        """Put stand-ins in for ``parts``; return what to restore."""
        blocks = self.adapter.blocks(self.model)
        saved = {}
        for kind, i in parts:
            name = self.adapter.attn_name if kind == "attention" else self.adapter.mlp_name
            saved[(name, i)] = getattr(blocks[i], name)
        skip_sublayers(
            blocks,
            (self.adapter.attn_name, self.adapter.mlp_name),
            [i for k, i in parts if k == "attention"],
            [i for k, i in parts if k == "mlp"],
        )
        self.skipped.update(parts)
        return saved

    def _restore(self, saved: dict) -> None:
        blocks = self.adapter.blocks(self.model)
        for (name, i), module in saved.items():
            setattr(blocks[i], name, module)
            self.skipped.discard(("attention" if name == self.adapter.attn_name else "mlp", i))

    def scores(self, remaining: list[Candidate]) -> list[float]:
        out = []
        for cand in remaining:
            saved = self._swap(cand.parts())
            try:
                out.append(self._score(self._run_from(cand.block)))
            finally:
                self._restore(saved)
        return out

    def commit(self, cand: Candidate) -> None:
        self._swap(cand.parts())
        self._refresh_inputs(cand.block)


def greedy_order(
    evaluator, cands: list[Candidate], count: int, progress: bool = True, desc: str = "finercut"
):
    """Remove ``count`` candidates greedily; return ``[(candidate, discrepancy), ...]``."""
    remaining = list(cands)
    order = []
    for _ in tqdm(range(count), desc=desc, unit="step", disable=not progress):
        scores = evaluator.scores(remaining)
        best = min(range(len(scores)), key=lambda k: (scores[k], k))
        cand = remaining.pop(best)
        evaluator.commit(cand)
        order.append((cand, scores[best]))
    return order


def calibration_tokens(lm: LoadedModel, c: CalibrationConfig) -> torch.Tensor:
    """``[num_sequences, seq_len]`` packed calibration tokens (documents joined with EOS);
    fewer is an error naming what the text holds, unless ``calibration.allow_fewer``."""
    text = Text(c.source, c.hub)
    return packed_sequences(lm.tokenizer, text.documents(c.split), c, text.name(c.split))


def calibration_batches(lm: LoadedModel, c: CalibrationConfig) -> list[torch.Tensor]:
    """The calibration tokens in batches of ``c.batch_size``, where the model's inputs go (its
    input embedding's device: the first GPU of a split model)."""
    seqs = calibration_tokens(lm, c)
    device = input_device(lm.model)
    return [seqs[i : i + c.batch_size].to(device) for i in range(0, len(seqs), c.batch_size)]


def _read_order(path) -> dict[str, Any]:
    """A stored search: JSON with an ``order`` list (else it is damaged)."""
    stored = json.loads(path.read_text())
    if not isinstance(stored, dict) or not isinstance(stored.get("order"), list):
        raise ValueError("no order list")
    return stored


@dataclass
class Search:
    """One method's search: its cache file prefix, what (besides the model and the calibration
    tokens) decides its order, and how to run it (returns ``{"order": [...], ...}``)."""

    name: str
    key: dict[str, Any]
    run: Callable[[], dict[str, Any]]


def cached_search(
    lm: LoadedModel, calibration: CalibrationConfig, search: Search, need: int | None
) -> tuple[dict[str, Any], bool]:
    """``(stored, hit)``: a stored order of at least ``need`` entries (None: any stored one),
    or ``search.run()`` stored and returned."""
    seqs = calibration_tokens(lm, calibration)
    key = scan_key(lm.cache_key(), seqs.tolist(), search.key)
    path = paths.scan_cache_dir() / f"{search.name}-{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with cache_lock(path):
        stored = read_or_quarantine(path, _read_order)
        if stored is not None and (need is None or len(stored["order"]) >= need):
            return stored, True
        stored = search.run()
        atomic.write_json(path, stored)
        return stored, False
