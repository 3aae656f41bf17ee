"""Random-weight models and a byte-level tokenizer, built in code: tests need no download.

The tokenizer maps every UTF-8 byte to one token (plus ``<|endoftext|>``), so any text
round-trips and the vocabulary is 257 tokens: small enough for an 8-block, hidden-64 model.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from layerprune.errors import LayerpruneError

FAMILIES = ("llama", "qwen2", "mistral", "gemma3_text")
EOS = "<|endoftext|>"


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with no merges: token = byte, id 256 = EOS (also BOS/PAD)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = ByteLevel.alphabet()
    byte_to_char = sorted(alphabet, key=lambda c: _char_byte(c))
    vocab = {ch: i for i, ch in enumerate(byte_to_char)}
    vocab[EOS] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS, unk_token=None
    )


def _char_byte(ch: str) -> int:
    """The byte that GPT-2's byte-to-unicode table maps to ``ch``."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(map(chr, cs), bs, strict=True))[ch]


def random_model(spec, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A causal LM of ``spec.family`` with seeded random weights (identical for equal specs).
    ``spec``: a ``config.RandomModelConfig`` (family, layers, sizes, vocabulary, seed)."""
    family, hidden_size, heads = spec.family, spec.hidden_size, spec.num_attention_heads
    if family not in FAMILIES:
        raise LayerpruneError(f"random model family '{family}' unknown; one of {FAMILIES}")
    extra = {}
    if family == "gemma3_text":
        extra = {"head_dim": hidden_size // heads, "sliding_window": 16}
    if family in ("qwen2", "mistral"):
        extra = {"sliding_window": None}
    config = AutoConfig.for_model(
        family,
        num_hidden_layers=spec.num_hidden_layers,
        hidden_size=hidden_size,
        intermediate_size=spec.intermediate_size,
        num_attention_heads=heads,
        num_key_value_heads=spec.num_key_value_heads,
        vocab_size=spec.vocab_size,
        max_position_embeddings=2048,
        bos_token_id=256,
        eos_token_id=256,
        pad_token_id=256,
        tie_word_embeddings=False,
        **extra,
    )
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()
