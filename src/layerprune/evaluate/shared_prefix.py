"""lm-eval LMs for the model in memory: stock ``HFLM`` (counted) and the shared-prefix scorer.

``SharedPrefixLM`` returns what stock ``HFLM`` returns for every log-likelihood request (to
float32 rounding), faster: lm-eval runs every option of a question, and every few-shot prompt,
from the first token. Here requests are sorted by their tokens and planned by ``prefix_plan``:
a batch-1 KV cache holds the prefix a chunk of questions shares (cropped for the next chunk,
never recomputed); each question is one packed row on top of it (its context once, then all
its options, each option masked from its siblings: a tree mask; long options start 16-aligned
after masked gap tokens, so attention rounds them as stock does), rows run in length-sorted
batches cut to run the fewest positions (padding vs calls), and the LM head runs only on
scored positions (``logits_to_keep``).
``loglikelihood_rolling`` and generation stay stock. A model whose forward cannot continue a
cache under such a mask (checked once on real tokens) is scored the stock way, with a log line.

Exactness rules, from ``../shared/EVAL_NOTES.md``: a fresh ``DynamicCache()`` (no config: full
KV per layer; the mask enforces sliding windows, by position); explicit ``position_ids``; right
padding only; a padding token attends to itself only. The mask is 4-D (boolean for SDPA,
additive for eager attention), one per layer type for models with ``layer_types``.
"""

from __future__ import annotations

import inspect
import logging

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from tqdm.auto import tqdm
from transformers import DynamicCache

from layerprune.evaluate.perplexity import HEAD_CHUNK
from layerprune.evaluate.prefix_plan import (
    Packed,
    Request,
    common_prefix,
    group_requests,
    pack,
    plan_batches,
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


def _mask_windows(config) -> dict[str | None, int | None]:
    """The attention mask(s) the model's forward takes, each with its window (None: full).
    Models with ``layer_types`` (Gemma3, Qwen2) take one mask per layer type in a dict (key:
    the type); others one mask (key None), sliding if ``sliding_window`` is set (Mistral)."""
    window = getattr(config, "sliding_window", None) or None
    types = getattr(config, "layer_types", None)
    if types is not None:
        return {t: window if t == "sliding_attention" else None for t in sorted(set(types))}
    if getattr(config, "use_sliding_window", True) is False:
        window = None
    return {None: window}


def _expanded(cache: DynamicCache, rows: int) -> DynamicCache:
    """A new cache holding ``cache``'s one row ``rows`` times (``cache`` is left as it is)."""
    out = DynamicCache()
    for i, layer in enumerate(cache.layers):
        if getattr(layer, "is_initialized", True) and layer.keys is not None:
            k, v = layer.keys, layer.values
            out.update(k.expand(rows, *k.shape[1:]), v.expand(rows, *v.shape[1:]), i)
    return out


class SharedPrefixLM(CountingLM):
    """``HFLM`` whose ``loglikelihood`` scores requests through a prefix trie (module doc).

    ``join_tokens``: a group joins the running chunk if that makes the others recompute at
    most this many positions. ``batch_tokens``: one model call runs at most this many padded
    tokens (rows x longest row). ``call_tokens``: what one more model call costs, in decoder
    positions; ``prefix_plan.plan_batches`` weighs it against padding. On CPU a call reads the
    LM head's weights once, memory-bound: SmolLM2's 28M-weight head took 22 ms for 2 positions
    where a decoder position takes about 1.6 ms (2 cores), so the default is a rough
    8 + 64 x ``head_cost`` (25 for SmolLM2, 115 for Gemma3's 262k-vocabulary head). On CUDA
    1024, a guess not measured here (a call is kernel launches; positions are nearly free
    until the GPU is full).
    """

    def __init__(
        self,
        *args,
        join_tokens: int = 64,
        batch_tokens: int | None = None,
        call_tokens: int | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.join_tokens = join_tokens
        cpu = self.device.type == "cpu"
        # padded tokens per model call (rows x length)
        self.batch_tokens = batch_tokens or (1024 if cpu else 16384)
        self.model_calls = 0
        self._cache_ok: bool | None = None  # decided on the first request
        self._cache_kw = _cache_keyword(self.model)
        base = _unwrap(self.model)
        self._windows = _mask_windows(base.config)
        self._eager = base.config._attn_implementation == "eager"
        # LM head positions per call: at most HEAD_CHUNK logits (64M floats)
        head = base.get_output_embeddings().weight
        self.head_positions = max(1, HEAD_CHUNK // head.shape[0])
        # an LM-head position in decoder positions: head weights / decoder weights (embedding out)
        decoder = sum(p.numel() for p in base.get_decoder().parameters())
        blocks = decoder - base.get_input_embeddings().weight.numel()
        self.head_cost = head.numel() / max(blocks, 1)
        self.call_tokens = call_tokens or (round(8 + 64 * self.head_cost) if cpu else 1024)

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
            torch.inference_mode(),
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
        """Does a forward continued from a cache, with the tree mask of two sibling options,
        give the full forward's log-probabilities?"""
        n = min(len(tokens), 16)
        if n < 2:
            return True
        h, m = n // 2, n - n // 2
        ids = torch.tensor([tokens[:n]], device=self.device)
        rest = tuple(tokens[h:n])  # as two options after the first h tokens: both see only h
        twice = Packed(rest * 2, (1,) * m + (2,) * m, tuple(range(m)) * 2, ())
        try:
            full = self._call(ids, None, self._positions(0, 1, n), keep=n)[:, h:]
            cache = DynamicCache()
            self._call(ids[:, :h], cache, self._positions(0, 1, h))
            tree = self._call(
                ids[:, h:].repeat(1, 2),
                _expanded(cache, 1),
                h + torch.tensor([twice.position], device=self.device),
                mask=self._tree_mask(h, [twice], 2 * m),
                keep=2 * m,
            )
        except Exception as e:  # a forward without cache / position / 4-D mask support
            log.warning(
                "shared-prefix scoring off (the model cannot continue a cache: %s); stock scoring",
                e,
            )
            return False
        tol = 1e-3 if full.dtype == torch.float32 else 5e-2
        diff = (tree - torch.cat([full, full], dim=1)).abs().max().item()
        if not diff <= tol * max(1.0, full.abs().max().item()):
            log.warning(
                "shared-prefix scoring off (a cached, tree-masked forward differs by %.3g); "
                "stock scoring",
                diff,
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
        bar = tqdm(
            total=len(reqs),
            disable=disable_tqdm or self.rank != 0,
            desc="Shared-prefix loglikelihood",
        )
        prefix = _Prefix(self)
        for chunk in plan_chunks(group_requests(reqs), self.join_tokens):
            prefix.extend_to(chunk.prefix_tokens)
            rows = [pack(g, chunk.prefix) for g in chunk.groups]
            for part in plan_batches(
                rows, self.batch_tokens, self.head_positions, self.call_tokens, self.head_cost
            ):
                bar.update(self._run_rows(chunk.prefix, part, prefix.cache, results))
        bar.close()
        for (request_str, _, _), answer in zip(requests, results, strict=True):
            if request_str is not None:
                self.cache_hook.add_partial("loglikelihood", request_str, answer)
        return results

    def _run_rows(self, p: int, rows: list[Packed], prefix_cache, results: list) -> int:
        """One call: packed rows (right-padded) on the shared prefix's cache, the LM head on
        their options' positions only. Returns requests scored."""
        ids = self._padded([r.tokens for r in rows])
        n, width = ids.shape
        position = torch.zeros(n, width, dtype=torch.long)
        for i, r in enumerate(rows):
            position[i, : len(r.tokens)] = torch.tensor(r.position)
        cache = _expanded(prefix_cache, n) if p else None
        mask = None if all(len(r.options) == 1 for r in rows) else self._tree_mask(p, rows, width)
        most = max(r.scored for r in rows)
        keep = torch.tensor(
            [
                [i for start, length, _ in r.options for i in range(start, start + length)]
                + [len(r.tokens) - 1] * (most - r.scored)
                for r in rows
            ],
            device=self.device,
        )
        logp = self._call(ids, cache, (p + position).to(self.device), mask=mask, keep=keep)
        done = 0
        for i, r in enumerate(rows):
            at = 0
            for _, length, reqs in r.options:
                done += self._score(logp[i, at : at + length], reqs, results)
                at += length
        return done

    def _tree_mask(self, p: int, rows: list[Packed], width: int):
        """The 4-D attention mask(s) of packed rows: every token sees the shared prefix; a
        context token sees the context before it; an option token sees the context and its own
        option before it (never a sibling); a padding token sees itself (no empty softmax row).
        Sliding layers also drop keys ``window`` or more positions back."""
        n = len(rows)
        segment = torch.full((n, width), -1, dtype=torch.long)
        position = torch.zeros(n, width, dtype=torch.long)
        for i, r in enumerate(rows):
            segment[i, : len(r.tokens)] = torch.tensor(r.segment)
            position[i, : len(r.tokens)] = torch.tensor(r.position)
        q, k = segment[:, :, None], segment[:, None, :]
        index = torch.arange(width)
        causal = index[:, None] >= index[None, :]
        row = causal & ((k == 0) | (q == k)) & (k >= 0)
        row |= torch.eye(width, dtype=torch.bool) & (q < 0)
        seen = torch.cat([torch.ones(n, width, p, dtype=torch.bool), row], dim=2)
        q_pos = (p + position)[:, :, None]
        k_pos = torch.cat([torch.arange(p).expand(n, p), p + position], dim=1)[:, None, :]
        masks = {}
        for kind, window in self._windows.items():
            m = seen if window is None else seen & (q_pos - k_pos < window)
            if self._eager:  # additive, as transformers' eager masks
                dtype = self.model.dtype
                m = torch.zeros(m.shape, dtype=dtype).masked_fill(~m, torch.finfo(dtype).min)
            masks[kind] = m[:, None].to(self.device)
        return masks.get(None, masks)

    def _score(self, logp: torch.Tensor, reqs: list[Request], results: list) -> int:
        """Stock's answer for each request scored from these rows: (sum of log-probabilities
        of the continuation, whether it is the greedy continuation)."""
        greedy = logp.argmax(dim=-1)
        for req in reqs:
            targets = torch.tensor(req.targets, device=logp.device)
            chosen = logp[-len(targets) :].gather(-1, targets[:, None]).squeeze(-1)
            results[req.index] = (
                float(chosen.sum(dtype=torch.float64)),
                bool((greedy[-len(targets) :] == targets).all()),
            )
        return len(reqs)


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
