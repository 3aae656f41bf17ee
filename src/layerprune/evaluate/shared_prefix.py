"""lm-eval LMs for the model in memory: stock ``HFLM`` (counted) and the shared-prefix scorer.

``SharedPrefixLM`` returns what stock ``HFLM`` returns for every log-likelihood request (to
float32 rounding), faster: lm-eval runs every option of a question, and every few-shot prompt,
from the first token. Here requests are sorted by their tokens and planned by ``prefix_plan``:
a batch-1 KV cache holds the prefix a chunk of questions shares (cropped for the next chunk,
never recomputed); each question is one packed row on top of it (its context once, then its
options as a token trie, each option masked from its siblings' own tokens: a tree mask; runs
that long options read start 16-aligned after masked gap tokens, so attention rounds them as
stock does), rows run through the decoder in length-sorted batches cut to run the fewest
positions (padding vs calls), and the LM head runs only on scored positions, those of many
calls at once (``_Head``).
``loglikelihood_rolling`` and generation stay stock. A model whose forward cannot continue a
cache under such a mask (checked once on real tokens) is scored the stock way, with a log line.

Exactness rules (``docs/scoring.md`` says why each holds): a fresh ``DynamicCache()`` (no
config: full KV per layer; the mask enforces sliding windows, by position); explicit
``position_ids``; right padding only; a padding token attends to itself only. The mask is 4-D
(boolean for SDPA, additive for eager attention), one per layer type for models with
``layer_types``.

Its constants are a per-device ``ScoringProfile`` (``PROFILES``): the CPU one is measured on
the 2-core AVX-512 machines here (float32); the CUDA one has no alignment gaps and large calls
(not measured for rounding: see ``docs/scoring.md``). ``scorer=shared`` settings override any
of them.

It is also an lm-eval model, ``layerprune-shared`` (``@register_model``): any Hugging Face
checkpoint is scored by it with lm-eval's own flags and output through
``layerprune-lm-eval --model layerprune-shared --model_args pretrained=DIR --tasks ...``.

It implements ``_loglikelihood_tokens``, which lm-eval's ``TemplateLM`` declares abstract for
its subclasses to implement (``loglikelihood`` encodes the requests and calls it); the
signature is checked by a test against the installed lm-eval.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from tqdm.auto import tqdm
from transformers import DynamicCache

from layerprune.evaluate.perplexity import HEAD_CHUNK
from layerprune.evaluate.prefix_plan import (
    ALIGN,
    ALIGN_MIN,
    Packed,
    Request,
    common_prefix,
    group_requests,
    pack,
    plan_batches,
    plan_chunks,
    to_request,
)
from layerprune.models.adapter import output_logits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoringProfile:
    """The shared-prefix scorer's constants for one kind of device (``docs/scoring.md``).

    - ``align`` / ``align_min``: the runs that an option of ``align_min``+ tokens reads start a
      multiple of ``align`` tokens after where stock has their first token (masked gap tokens
      before them), so float32 attention rounds them as stock does (0: no gaps);
    - ``min_call_tokens``: every matmul runs on at least this many rows (MKL's float32 GEMM
      rounds a row differently when it is one of fewer than 12 rows, 4 and 8 excepted);
    - ``batch_tokens``: at most this many padded tokens per decoder call;
    - ``call_tokens``: what one more decoder call costs, in decoder positions (weighed against
      padding by ``prefix_plan.plan_batches``);
    - ``join_tokens``: a group joins the running chunk if that makes the others recompute at
      most this many positions (``prefix_plan.plan_chunks``);
    - ``prefix_cache_bytes``: at most this many bytes of the shared prefix's KV cache copied to
      the rows of one call (each row holds its own copy: rows x prefix length x KV bytes per
      token; a call has fewer rows where the plan's would exceed it).
    """

    align: int = ALIGN
    align_min: int = ALIGN_MIN
    min_call_tokens: int = 16
    batch_tokens: int = 1024
    call_tokens: int = 16
    join_tokens: int = 64
    prefix_cache_bytes: int = 2 << 30


PROFILES = {
    # measured on the 2-core AVX-512 CPUs, float32 (benchmarks/attention_alignment.py,
    # benchmarks/eval_throughput.py): 16 float32 lanes; a call costs ~8 positions' time
    "cpu": ScoringProfile(),
    # not measured for rounding: no alignment gaps; a call is kernel launches, positions are
    # nearly free until the GPU is full
    "cuda": ScoringProfile(
        align=0, batch_tokens=16384, call_tokens=1024, prefix_cache_bytes=8 << 30
    ),
}


def profile_for(device: str, **overrides) -> ScoringProfile:
    """The profile of ``device`` ("cpu", "cuda", "cuda:1", ...) with ``overrides`` (None = keep)."""
    base = PROFILES["cuda" if device.startswith("cuda") else "cpu"]
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


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
    """The decoder's cache argument: ``cache`` (transformers >= 5.24) or ``past_key_values``."""
    params = inspect.signature(type(_unwrap(model).get_decoder()).forward).parameters
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


def _cache_bytes(cache: DynamicCache) -> int:
    """Bytes of the keys and values ``cache`` holds."""
    return sum(
        layer.keys.nbytes + layer.values.nbytes
        for layer in cache.layers
        if getattr(layer, "is_initialized", True) and layer.keys is not None
    )


def _expanded(cache: DynamicCache, rows: int) -> DynamicCache:
    """A new cache holding ``cache``'s one row ``rows`` times (``cache`` is left as it is)."""
    out = DynamicCache()
    for i, layer in enumerate(cache.layers):
        if getattr(layer, "is_initialized", True) and layer.keys is not None:
            k, v = layer.keys, layer.values
            out.update(k.expand(rows, *k.shape[1:]), v.expand(rows, *v.shape[1:]), i)
    return out


@register_model("layerprune-shared")
class SharedPrefixLM(CountingLM):
    """``HFLM`` whose ``loglikelihood`` scores requests through a prefix trie (module doc).

    ``profile``: a ``ScoringProfile`` (default: the device's, ``PROFILES``); from the lm-eval
    command line its fields are model arguments too (``--model_args
    pretrained=DIR,call_tokens=64``). The LM head runs apart from the decoder calls, on up to
    ``HEAD_CHUNK`` logits' worth of scored positions.
    """

    def __init__(self, *args, profile: ScoringProfile | None = None, **kwargs):
        fields = ScoringProfile.__dataclass_fields__
        overrides = {k: int(kwargs.pop(k)) for k in list(kwargs) if k in fields}
        super().__init__(*args, **kwargs)
        self.profile = profile or profile_for(self.device.type, **overrides)
        self.model_calls = 0
        self._cache_ok: bool | None = None  # decided on the first request
        self._cache_kw = _cache_keyword(self.model)
        base = _unwrap(self.model)
        self._windows = _mask_windows(base.config)
        self._eager = base.config._attn_implementation == "eager"
        # LM head positions at once: at most HEAD_CHUNK logits (64M floats)
        head = base.get_output_embeddings().weight
        self.head_positions = max(self.profile.min_call_tokens, HEAD_CHUNK // head.shape[0])
        # a float32 head, no autocast, float32 log-softmax: the head runs into kept buffers
        self._vocab = head.shape[0]
        self._plain_head = (
            head.dtype == torch.float32
            and self.mixed_precision_dtype is None
            and self.softmax_dtype in (None, torch.float32)
        )
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    # -- model calls ------------------------------------------------------------------------

    def _autocast(self):
        return torch.autocast(
            device_type=self.device.type,
            dtype=self.mixed_precision_dtype,
            enabled=self.mixed_precision_dtype is not None,
        )

    def _decode(self, ids, cache, positions, mask=None) -> torch.Tensor:
        """One decoder forward continuing ``cache`` (extended in place): the final hidden
        states (after the final norm), ``[rows, length, hidden]``."""
        self.model_calls += 1
        kwargs = {self._cache_kw: cache, "position_ids": positions, "use_cache": cache is not None}
        if mask is not None:
            kwargs["attention_mask"] = mask
        with torch.inference_mode(), self._autocast():
            return _unwrap(self.model).get_decoder()(input_ids=ids, **kwargs).last_hidden_state

    def _log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """Log-softmax of the LM head on final hidden states ``[positions, hidden]``, as stock
        computes it. Fewer than ``min_call_tokens`` positions are padded (the matmul rounds
        small batches differently)."""
        n, least = hidden.shape[0], self.profile.min_call_tokens
        if n < least:
            hidden = torch.cat([hidden, hidden[-1:].expand(least - n, -1)])
        base = _unwrap(self.model)
        with torch.inference_mode(), self._autocast():
            if not self._plain_head:
                logits = output_logits(base, hidden)
                return F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)[:n]
            # the same kernels as stock, into buffers kept between calls (``output_logits``)
            logits, logp = self._head_buffers(hidden.shape[0], self._vocab)
            logits = output_logits(base, hidden, out=logits)
            return torch.log_softmax(logits, dim=-1, out=logp)[:n]

    def _head_buffers(self, rows: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``[rows, vocab]`` views of the logits and log-probability buffers."""
        if self._buffers is None or self._buffers[0].shape[0] < rows:
            size = (max(rows, self.head_positions), vocab)
            device = _unwrap(self.model).get_output_embeddings().weight.device  # the logits'
            self._buffers = tuple(torch.empty(size, device=device) for _ in range(2))
        return self._buffers[0][:rows], self._buffers[1][:rows]

    def _positions(self, start: torch.Tensor | int, rows: int, length: int) -> torch.Tensor:
        base = torch.arange(length, device=self.device).expand(rows, length)
        start = torch.as_tensor(start, device=self.device).reshape(-1, 1)
        return base + start

    def _padded(self, seqs: list[tuple[int, ...]]) -> torch.Tensor:
        """Right-padded ``[rows, longest]`` token ids (pad 0, as stock); a call of fewer than
        ``min_call_tokens`` tokens is padded wider (``ScoringProfile``)."""
        width = max(max(len(s) for s in seqs), -(-self.profile.min_call_tokens // len(seqs)))
        out = torch.zeros(len(seqs), width, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        return out.to(self.device)

    def _cache_works(self, tokens: tuple[int, ...]) -> bool:
        """Does a forward continued from a cache, with the tree mask of two sibling runs,
        give the full forward's log-probabilities?"""
        n = min(len(tokens), 16)
        if n < 2:
            return True
        h, m = n // 2, n - n // 2
        ids = torch.tensor([tokens[:n]], device=self.device)
        rest = tuple(tokens[h:n])  # as two runs after the first h tokens: both see only h
        twice = Packed(rest * 2, tuple(range(m)) * 2, ((0, 0, -1), (0, m, -1), (m, m, -1)), ())
        try:
            full = self._log_probs(self._decode(ids, None, self._positions(0, 1, n))[0, h:])
            full = full.clone()  # the next call reuses the head's buffers
            cache = DynamicCache()
            self._decode(ids[:, :h], cache, self._positions(0, 1, h))
            hidden = self._decode(
                ids[:, h:].repeat(1, 2),
                _expanded(cache, 1),
                h + torch.tensor([twice.position], device=self.device),
                mask=self._tree_mask(h, [twice], 2 * m),
            )
            tree = self._log_probs(hidden[0])
        except Exception as e:  # a forward without cache / position / 4-D mask support
            log.warning(
                "shared-prefix scoring off (the model cannot continue a cache: %s); stock scoring",
                e,
            )
            return False
        # the decoder's precision, not the log-softmax's (float64 in the tests)
        tol = 1e-3 if hidden.dtype in (torch.float32, torch.float64) else 5e-2
        diff = (tree - torch.cat([full, full])).abs().max().item()
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
        prefix, head = _Prefix(self), _Head(self, results, bar)
        pr = self.profile
        for chunk in plan_chunks(group_requests(reqs), pr.join_tokens):
            prefix.extend_to(chunk.prefix_tokens)
            rows = [pack(g, chunk.prefix, pr.align, pr.align_min) for g in chunk.groups]
            # rows per call whose copies of the prefix cache fit ``prefix_cache_bytes``
            most = max(1, pr.prefix_cache_bytes // max(1, _cache_bytes(prefix.cache)))
            for part in plan_batches(rows, pr.batch_tokens, pr.call_tokens):
                for s in range(0, len(part), most):
                    self._run_rows(chunk.prefix, part[s : s + most], prefix.cache, head)
        head.flush()
        bar.close()
        for (request_str, _, _), answer in zip(requests, results, strict=True):
            if request_str is not None:
                self.cache_hook.add_partial("loglikelihood", request_str, answer)
        return results

    def _run_rows(self, p: int, rows: list[Packed], prefix_cache, head: _Head) -> None:
        """One decoder call: packed rows (right-padded) on the shared prefix's cache; the
        final hidden states of their scored positions go to ``head``."""
        ids = self._padded([r.tokens for r in rows])
        n, width = ids.shape
        position = torch.zeros(n, width, dtype=torch.long)
        for i, r in enumerate(rows):
            position[i, : len(r.tokens)] = torch.tensor(r.position)
        cache = _expanded(prefix_cache, n) if p else None
        mask = None if all(r.chain for r in rows) else self._tree_mask(p, rows, width)
        hidden = self._decode(ids, cache, (p + position).to(self.device), mask=mask)
        for i, r in enumerate(rows):
            at = [k for start, length, _ in r.runs[1:] for k in range(start, start + length)]
            local = {k: j for j, k in enumerate(at)}  # row index -> index among ``at``
            head.add(
                hidden[i, torch.tensor(at, device=hidden.device)],
                [([local[k] for k in path], reqs) for path, reqs in r.options],
            )

    def _tree_mask(self, p: int, rows: list[Packed], width: int):
        """The 4-D attention mask(s) of packed rows: every token sees the shared prefix; a
        run's token sees its parent chain and its run up to itself (context tokens: the
        context before them; an option's tokens: the context, the tokens it shares with earlier
        options and its own, never a sibling's); gap and padding tokens see themselves (no
        empty softmax row). Sliding layers also drop keys ``window`` or more positions back."""
        n = len(rows)
        row = torch.eye(width, dtype=torch.bool).repeat(n, 1, 1)  # gaps, padding: themselves
        position = torch.zeros(n, width, dtype=torch.long)
        for i, r in enumerate(rows):
            position[i, : len(r.tokens)] = torch.tensor(r.position)
            for start, length, parent in r.runs:  # parents come first in the row
                block = row[i, start : start + length]
                block[:] = row[i, parent] if parent >= 0 else False
                block[:, start : start + length] |= torch.ones(
                    length, length, dtype=torch.bool
                ).tril()
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


class _Head:
    """The LM head, run on the scored positions of many decoder calls at once: each call has
    a few (one per question on BoolQ or MMLU), and the head's matmul is slow on few rows and
    reads all its weights every time."""

    def __init__(self, lm: SharedPrefixLM, results: list, bar):
        self.lm, self.results, self.bar = lm, results, bar
        self.hidden: list[torch.Tensor] = []
        self.options: list[tuple[list[int], list[Request]]] = []  # indices into the pending rows
        self.rows = 0

    def add(self, hidden: torch.Tensor, options: list[tuple[list[int], list[Request]]]) -> None:
        """Scored positions' hidden states ``[k, hidden]`` and, per option, which of them it
        reads (in order) and its requests."""
        if self.rows + hidden.shape[0] > self.lm.head_positions:
            self.flush()
        self.options += [([self.rows + k for k in path], reqs) for path, reqs in options]
        self.hidden.append(hidden)
        self.rows += hidden.shape[0]

    def flush(self) -> None:
        if not self.rows:
            return
        logp = self.lm._log_probs(torch.cat(self.hidden))
        greedy = logp.argmax(dim=-1)
        for path, reqs in self.options:
            self.bar.update(_score(logp, greedy, path, reqs, self.results))
        self.hidden, self.options, self.rows = [], [], 0


def _score(logp, greedy, path: list[int], reqs: list[Request], results: list) -> int:
    """Stock's answer for each request scored at rows ``path`` of ``logp`` (log-probabilities)
    and ``greedy`` (their argmax): (sum of the continuation's log-probabilities, whether it is
    the greedy continuation)."""
    for req in reqs:
        at = torch.tensor(path[-len(req.targets) :], device=logp.device)
        targets = torch.tensor(req.targets, device=logp.device)
        chosen = logp[at, targets]  # [len(targets)], never a copy of whole vocabulary rows
        results[req.index] = (
            float(chosen.sum(dtype=torch.float64)),
            bool((greedy[at] == targets).all()),
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
        if rest:  # padded to min_call_tokens tokens (``_padded``); the padding is cropped
            ids = self.lm._padded([rest])
            self.lm._decode(ids, self.cache, self.lm._positions(keep, 1, ids.shape[1]))
            if ids.shape[1] > len(rest):
                self.cache.crop(len(rest) - ids.shape[1])
        self.tokens = tuple(tokens)
