"""Token-level loss and perplexity of a causal LM on held-out documents.

Documents are tokenised, joined with EOS and cut into windows of ``context_length`` tokens,
starting every ``stride`` tokens; each window scores only tokens no earlier window scored
(with ``stride == context_length`` the windows are disjoint, as in most papers' tables). The result is the mean negative
log-likelihood per scored token, and its exponent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from layerprune.models.adapter import input_device, output_logits


@dataclass
class PerplexityResult:
    loss: float  # mean NLL per scored token (nats)
    perplexity: float
    tokens: int  # tokens scored
    context_length: int
    stride: int

    def word_perplexity(self, words: int) -> float:
        """exp(total NLL / words): comparable across tokenizers (WikiText-2 convention)."""
        return math.exp(self.loss * self.tokens / max(words, 1))


def token_stream(tokenizer, documents: list[str], max_tokens: int = 0) -> torch.Tensor:
    """Token ids of the documents joined with EOS, truncated to ``max_tokens`` (0 = all)."""
    ids: list[int] = []
    for doc in documents:
        ids.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
        if max_tokens and len(ids) >= max_tokens:
            break
    return torch.tensor(ids[:max_tokens] if max_tokens else ids, dtype=torch.long)


def windows(n_tokens: int, context_length: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, end, n_scored)`` per window: each window scores its last ``n_scored`` tokens.

    No token is scored twice; a window's first token has no context inside it and is never
    scored, so disjoint windows (stride == context_length) skip one token per window.
    """
    out = []
    prev_end = 1  # token 0 has no context and is never scored
    for begin in range(0, n_tokens - 1, stride):
        end = min(begin + context_length, n_tokens)
        if end <= prev_end:
            break
        out.append((begin, end, min(end - prev_end, end - begin - 1)))
        prev_end = end
        if end == n_tokens:
            break
    return out


# logits elements (positions x vocabulary) computed at once: 256 MB in fp32, i.e. 256 positions
# of Gemma3's 262k vocabulary. Much smaller chunks re-read the head's weights for every few
# positions (16 at a time took Gemma3's c4_loss from 604 s to 999 s on a loaded machine).
HEAD_CHUNK = 1 << 26


@dataclass(frozen=True)
class Windows:
    """How a token stream is scored: windows of ``context_length`` tokens every ``stride``
    tokens (each scores its last ``stride``), ``batch_size`` windows per forward."""

    context_length: int
    stride: int
    batch_size: int = 4


@torch.no_grad()
def perplexity(
    model: torch.nn.Module,
    ids: torch.Tensor,
    w: Windows,
    desc: str = "perplexity",
    head_chunk: int = HEAD_CHUNK,
) -> PerplexityResult:
    """Score ``ids`` (1-D) with ``model`` in windows; batches windows of equal length.

    The LM head and log-softmax run on ``head_chunk // vocabulary`` positions at a time, so the
    ``[batch, context, vocabulary]`` logits never exist whole (1 GB per 1,024-token window for
    Gemma3's 262k vocabulary); ``head_chunk=0`` computes them whole (the reference).
    """
    device = input_device(model)
    context_length, stride, batch_size = w.context_length, w.stride, w.batch_size
    spans = windows(len(ids), context_length, stride)
    total_nll, total_tokens = 0.0, 0
    groups: dict[int, list[tuple[int, int, int]]] = {}
    for span in spans:
        groups.setdefault(span[1] - span[0], []).append(span)
    batches = [g[i : i + batch_size] for g in groups.values() for i in range(0, len(g), batch_size)]
    for batch in tqdm(batches, desc=desc, unit="batch", leave=False):
        inputs = torch.stack([ids[b:e] for b, e, _ in batch]).to(device)
        nll = _token_nll(model, inputs, head_chunk)  # [B, T-1]
        for row, (_, _, n_scored) in enumerate(batch):
            total_nll += nll[row, -n_scored:].double().sum().item()
            total_tokens += n_scored
    loss = total_nll / max(total_tokens, 1)
    return PerplexityResult(loss, math.exp(loss), total_tokens, context_length, stride)


def _token_nll(model: torch.nn.Module, inputs: torch.Tensor, head_chunk: int) -> torch.Tensor:
    """-log p(token t | tokens < t) for t = 1..T-1 of each row: ``[B, T-1]`` in float32."""
    targets = inputs[:, 1:]
    if not head_chunk:
        logits = model(input_ids=inputs, use_cache=False).logits.float()
        return _nll(logits[:, :-1], targets)
    hidden = model.get_decoder()(input_ids=inputs, use_cache=False).last_hidden_state[:, :-1]
    flat, flat_targets = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    rows = max(1, head_chunk // model.config.get_text_config().vocab_size)
    nll = torch.empty(flat.shape[0], dtype=torch.float32, device=flat.device)
    for s in range(0, flat.shape[0], rows):
        logits = output_logits(model, flat[s : s + rows])
        nll[s : s + rows] = _nll(logits, flat_targets[s : s + rows])
    return nll.reshape(targets.shape)


def _nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-log softmax(logits)[target] per position, in float32, on the logits' device (a split
    model's last GPU; the targets come from its inputs, on the first)."""
    logp = torch.log_softmax(logits.float(), -1)
    return -logp.gather(-1, targets.to(logp.device)[..., None]).squeeze(-1)
