"""Stand-ins for removed sublayers: no weights, no compute, the residual stream passes through.

This file is self-contained (torch only) on purpose: a sublayer-pruned checkpoint carries a
copy of it as its ``trust_remote_code`` modeling file, so vanilla ``AutoModelForCausalLM``
rebuilds exactly the modules layerprune saved.
"""

import torch
from torch import nn


class SkippedAttention(nn.Module):
    """A removed self-attention: contributes zeros to the residual stream.

    With a KV cache it still records *where* the sequence is: one placeholder entry of shape
    [batch, 1, tokens, 1] per token, so ``cache.get_seq_length()`` (read from layer 0 when
    positions are computed during generation) stays right when block 0's attention is gone.
    """

    def __init__(self, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx

    def forward(self, hidden_states, *args, past_key_values=None, cache=None, **kwargs):
        cache = cache if cache is not None else past_key_values  # transformers >= 5.24: ``cache``
        if cache is not None:
            b, t = hidden_states.shape[:2]
            marker = hidden_states.new_zeros(b, 1, t, 1)
            cache.update(marker, marker, self.layer_idx)
        return torch.zeros_like(hidden_states), None


class SkippedMLP(nn.Module):
    """A removed MLP: contributes zeros to the residual stream."""

    def forward(self, hidden_states, *args, **kwargs):
        return torch.zeros_like(hidden_states)


def skip_sublayers(blocks, names, attention, mlp):
    """Replace ``attention`` / ``mlp`` (block indices) of ``blocks`` by their stand-ins;
    ``names``: the blocks' (attention, MLP) child names."""
    attn_name, mlp_name = names
    for i in attention:
        old = getattr(blocks[i], attn_name)
        setattr(blocks[i], attn_name, SkippedAttention(getattr(old, "layer_idx", i)))
    for i in mlp:
        setattr(blocks[i], mlp_name, SkippedMLP())
