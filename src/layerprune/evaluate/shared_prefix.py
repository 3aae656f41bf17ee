"""lm-eval LMs for the model in memory: stock ``HFLM`` (counted) and the shared-prefix scorer.

``SharedPrefixLM`` returns what stock ``HFLM`` returns for every log-likelihood request (to
float32 rounding), faster: lm-eval runs every option of a question, and every few-shot prompt,
from the first token. Here requests are sorted by their tokens and batched by
``prefix_plan``; a KV cache holds the prefix shared with the previous chunk (cropped, never
recomputed), each context runs once, the options of a question run as one batch from it, and
the LM head runs only on scored positions (``logits_to_keep``). ``loglikelihood_rolling`` and
generation stay stock. A model whose forward cannot continue from a cache (checked once on
real tokens) is scored the stock way, with a log line.

Exactness rules, from ``../shared/EVAL_NOTES.md``: a fresh ``DynamicCache()`` (no config: full
KV per layer, so a sliding-window layer can be cropped back; the mask enforces the window);
explicit ``position_ids``; right padding only; cache slots a row must not see (the padded tail
of a shorter context) are masked out, and are only allowed where no sliding window reaches
them (else rows run in batches of equal context length).
"""

from __future__ import annotations

import inspect
import logging

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from tqdm.auto import tqdm
from transformers import DynamicCache

from layerprune.evaluate.prefix_plan import (
    Chunk,
    Group,
    Request,
    common_prefix,
    group_requests,
    plan_chunks,
    to_request,
)

log = logging.getLogger(__name__)


class CountingLM(HFLM):
    """Stock ``HFLM`` that counts the log-likelihood requests reaching the model (the request
    cache answers the others)."""

    model_requests = 0

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        self.model_requests += len(requests)
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a peft wrapper."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _cache_keyword(model: torch.nn.Module) -> str:
    """``cache`` (transformers >= 5.24) or ``past_key_values`` (earlier 5.x)."""
    params = inspect.signature(type(_unwrap(model)).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _sliding_window(config) -> int | None:
    """The smallest attention window of any layer, or None if every layer sees everything."""
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if types is not None:
        return window if window and "sliding_attention" in types else None
    if getattr(config, "use_sliding_window", True) is False:
        return None
    return window or None


def _rows_of(cache: DynamicCache, rows: torch.Tensor | int, length: int | None = None):
    """A new cache whose batch rows are ``rows`` of ``cache`` (an int: row 0 repeated),
    optionally cut to its first ``length`` positions. ``cache`` is left as it is."""
    out = DynamicCache()
    for i, layer in enumerate(cache.layers):
        if not getattr(layer, "is_initialized", True) or layer.keys is None:
            continue
        k, v = layer.keys, layer.values
        if isinstance(rows, int):
            k, v = k.expand(rows, *k.shape[1:]), v.expand(rows, *v.shape[1:])
        else:
            k, v = k[rows], v[rows]
        if length is not None:
            k, v = k[..., :length, :], v[..., :length, :]
        out.update(k, v, i)
    return out


class SharedPrefixLM(CountingLM):
    """``HFLM`` whose ``loglikelihood`` scores requests through a prefix trie (module doc).

    ``join_tokens``: a group joins the running chunk if that makes the others recompute at
    most this many positions. ``max_token_rows``: a chunk's KV cache holds at most this many
    (row x position) entries. ``batch_tokens``: one model call runs at most this many padded
    tokens (rows x longest row); rows are sorted by length so the padding stays small.
    """

    def __init__(
        self,
        *args,
        join_tokens: int = 64,
        max_token_rows: int = 16384,
        batch_tokens: int | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.join_tokens, self.max_token_rows = join_tokens, max_token_rows
        # padded tokens per model call (rows x length)
        self.batch_tokens = batch_tokens or (1024 if self.device.type == "cpu" else 16384)
        self.model_calls = 0
        self._cache_ok: bool | None = None  # decided on the first request
        self._cache_kw = _cache_keyword(self.model)
        self._window = _sliding_window(_unwrap(self.model).config)

    # -- model calls ------------------------------------------------------------------------

    def _call(self, ids, cache, positions, mask=None, keep=None) -> torch.Tensor | None:
        """One forward continuing ``cache`` (extended in place). ``keep``: positions whose
        log-probabilities are needed (an int: the last ones; 2-D: per row); None runs the
        decoder only (no LM head)."""
        self.model_calls += 1
        kwargs = {self._cache_kw: cache, "position_ids": positions, "use_cache": cache is not None}
        if mask is not None:
            kwargs["attention_mask"] = mask
        with (
            torch.no_grad(),
            torch.autocast(
                device_type=self.device.type,
                dtype=self.mixed_precision_dtype,
                enabled=self.mixed_precision_dtype is not None,
            ),
        ):
            if keep is None:
                _unwrap(self.model).get_decoder()(input_ids=ids, **kwargs)
                return None
            logits = self.model(input_ids=ids, logits_to_keep=keep, **kwargs).logits
        return F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)

    def _positions(self, start: torch.Tensor | int, rows: int, length: int) -> torch.Tensor:
        base = torch.arange(length, device=self.device).expand(rows, length)
        start = torch.as_tensor(start, device=self.device).reshape(-1, 1)
        return base + start

    def _padded(self, seqs: list[tuple[int, ...]]) -> torch.Tensor:
        """Right-padded ``[rows, longest]`` token ids (pad 0, as stock)."""
        width = max(len(s) for s in seqs)
        out = torch.zeros(len(seqs), width, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        return out.to(self.device)

    def _cache_works(self, tokens: tuple[int, ...]) -> bool:
        """Does a forward continued from a cache give the full forward's log-probabilities?"""
        n = min(len(tokens), 16)
        if n < 2:
            return True
        ids = torch.tensor([tokens[:n]], device=self.device)
        try:
            full = self._call(ids, None, self._positions(0, 1, n), keep=n)
            cache = DynamicCache()
            self._call(ids[:, : n // 2], cache, self._positions(0, 1, n // 2))
            rest = self._call(
                ids[:, n // 2 :], cache, self._positions(n // 2, 1, n - n // 2), keep=n - n // 2
            )
        except Exception as e:  # a forward without cache / position support
            log.warning(
                "shared-prefix scoring off (the model cannot continue a cache: %s); stock scoring",
                e,
            )
            return False
        tol = 1e-3 if full.dtype == torch.float32 else 5e-2
        diff = (rest - full[:, n // 2 :]).abs().max().item()
        if not diff <= tol * max(1.0, full.abs().max().item()):
            log.warning(
                "shared-prefix scoring off (a cached forward differs by %.3g); stock scoring", diff
            )
            return False
        return True

    # -- scoring ----------------------------------------------------------------------------

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        reqs = [
            to_request(i, ctx, cont, self.max_length) for i, (_, ctx, cont) in enumerate(requests)
        ]
        if self._cache_ok is None and reqs:
            self._cache_ok = self._cache_works(reqs[0].inp)
        if not self._cache_ok:
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        results: list[tuple[float, bool] | None] = [None] * len(reqs)
        chunks = plan_chunks(group_requests(reqs), self.join_tokens, self.max_token_rows)
        bar = tqdm(
            total=len(reqs),
            disable=disable_tqdm or self.rank != 0,
            desc="Shared-prefix loglikelihood",
        )
        prefix = _Prefix(self)
        for chunk in chunks:
            prefix.extend_to(chunk.prefix_tokens)
            done = self._run_chunk(chunk, prefix.cache, results)
            bar.update(done)
        bar.close()
        for (request_str, _, _), answer in zip(requests, results, strict=True):
            if request_str is not None:
                self.cache_hook.add_partial("loglikelihood", request_str, answer)
        return results

    def _run_chunk(self, chunk: Chunk, prefix_cache: DynamicCache, results: list) -> int:
        """The chunk's groups in batches of similar phase-1 length (right padding costs what it
        pads: sorting keeps it small). Returns requests scored."""
        p = chunk.prefix
        done = 0
        for part in _batches(chunk.groups, lambda g: _tail_length(g, p), self.batch_tokens):
            done += self._run_groups(p, part, prefix_cache, results)
        return done

    def _run_groups(self, p: int, groups: list[Group], prefix_cache: DynamicCache, results) -> int:
        """Phase 1: every group's remaining context (+ the row of folded groups); phase 2: the
        rows of the other groups, from their context's cache. Returns requests scored."""
        tails = [g.context[p:] + (next(iter(g.rows)) if g.folded else ()) for g in groups]
        done = 0
        if any(tails):
            ids = self._padded([t or (0,) for t in tails])
            rows, width = ids.shape
            cache = _rows_of(prefix_cache, rows)
            keep = None
            if any(g.folded for g in groups):  # score the folded rows' last positions
                last = max(g.longest_row for g in groups if g.folded)
                keep = torch.tensor(
                    [[max(len(t) - last + j, 0) for j in range(last)] for t in tails],
                    device=self.device,
                )
            logp = self._call(ids, cache, self._positions(p, rows, width), keep=keep)
            for r, g in enumerate(groups):
                if g.folded:
                    (reqs,) = g.rows.values()
                    n = g.longest_row
                    done += self._score(logp[r, logp.shape[1] - n :], reqs, results)
        else:  # one group whose context is the whole prefix
            cache, width = prefix_cache, 0
        multi = [(r, g) for r, g in enumerate(groups) if not g.folded]
        if multi:
            done += self._run_rows(p, multi, cache, width, results)
        return done

    def _run_rows(self, p: int, multi: list[tuple[int, Group]], cache, width: int, results) -> int:
        """Phase 2. A row sees its own context (p + its length) and not the padded tail of
        phase 1; when a sliding window could reach that tail, rows run in batches of equal
        context length with the tail cut off instead of masked."""
        seen = [(r, g, len(g.context) - p) for r, g in multi]
        longest = max(g.longest_row for _, g in multi)
        if self._window is not None and p + width + longest > self._window:
            batches: dict[int, list] = {}
            for item in seen:
                batches.setdefault(item[2], []).append(item)
            return sum(
                self._run_batch(p, items, cache, width, cut=True, results=results)
                for items in batches.values()
            )
        return self._run_batch(p, seen, cache, width, cut=False, results=results)

    def _run_batch(self, p: int, items, cache, width: int, cut: bool, results) -> int:
        """The rows of ``items`` (phase-1 row, group, context length past ``p``) in batches of
        similar length."""
        every = [(r, c, scored, rs) for r, g, c in items for scored, rs in g.rows.items()]
        return sum(
            self._run_row_batch(p, part, cache, width, cut, results)
            for part in _batches(every, lambda row: len(row[2]), self.batch_tokens)
        )

    def _run_row_batch(self, p: int, batch, cache, width: int, cut: bool, results) -> int:
        rows = [r for r, _, _, _ in batch]
        lengths = [c for _, c, _, _ in batch]
        reqs = [(scored, rs) for _, _, scored, rs in batch]
        ids = self._padded([s for s, _ in reqs])
        n, width2 = ids.shape
        index = torch.tensor(rows, device=self.device)
        ctx = torch.tensor(lengths, device=self.device)
        if cut or all(c == width for c in lengths):
            sub = _rows_of(cache, index, p + lengths[0]) if cut else _rows_of(cache, index)
            mask = None
        else:
            sub = _rows_of(cache, index)
            kv = torch.arange(p + width, device=self.device).expand(n, -1)
            mask = torch.cat(
                [
                    (kv < (p + ctx)[:, None]).long(),
                    torch.ones(n, width2, dtype=torch.long, device=self.device),
                ],
                dim=1,
            )
        logp = self._call(ids, sub, self._positions(p + ctx, n, width2), mask=mask, keep=width2)
        done = 0
        for i, (scored, rs) in enumerate(reqs):
            done += self._score(logp[i, : len(scored)], rs, results)
        return done

    def _score(self, logp: torch.Tensor, reqs: list[Request], results: list) -> int:
        """Stock's answer for each request scored from these rows: (sum of log-probabilities
        of the continuation, whether it is the greedy continuation)."""
        greedy = logp.argmax(dim=-1)
        for req in reqs:
            targets = torch.tensor(req.targets, device=logp.device)
            chosen = logp[-len(targets) :].gather(-1, targets[:, None]).squeeze(-1)
            results[req.index] = (
                float(chosen.sum()),
                bool((greedy[-len(targets) :] == targets).all()),
            )
        return len(reqs)


def _tail_length(g: Group, p: int) -> int:
    """Phase-1 tokens of a group past the shared prefix ``p``."""
    return len(g.context) - p + (g.longest_row if g.folded else 0)


def _batches(items: list, length, tokens: int, max_rows: int = 256) -> list[list]:
    """``items`` sorted by ``length`` (longest first) in runs whose padded size (rows x the
    first, longest length) stays within ``tokens`` (at least one row each)."""
    out: list[list] = []
    for item in sorted(items, key=length, reverse=True):
        if out and len(out[-1]) < max_rows and (len(out[-1]) + 1) * length(out[-1][0]) <= tokens:
            out[-1].append(item)
        else:
            out.append([item])
    return out


class _Prefix:
    """The batch-1 KV cache of the last chunk's shared prefix, cropped and extended."""

    def __init__(self, lm: SharedPrefixLM):
        self.lm, self.cache, self.tokens = lm, DynamicCache(), ()

    def extend_to(self, tokens: tuple[int, ...]) -> None:
        keep = common_prefix(self.tokens, tokens)
        if keep < len(self.tokens):
            if keep == 0:
                self.cache = DynamicCache()
            else:
                self.cache.crop(keep - len(self.tokens))  # negative: drop that many (portable)
        rest = tokens[keep:]
        if rest:
            ids = torch.tensor([rest], device=self.lm.device)
            self.lm._call(ids, self.cache, self.lm._positions(keep, 1, len(rest)))
        self.tokens = tuple(tokens)
