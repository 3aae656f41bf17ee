"""One adapter for every decoder-only family: where the blocks, attention, MLP and norm are.

Llama, Qwen2, Mistral and Gemma3 share the HF layout ``model.model.layers[i].{self_attn,mlp}``
with ``o_proj`` / ``down_proj`` as the residual-branch outputs, so the adapter finds them by
introspection instead of keeping a copy per family. A new family with the same layout only
needs its ``model_type`` added to ``SUPPORTED``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from layerprune.errors import LayerpruneError

SUPPORTED = ("llama", "qwen2", "mistral", "gemma3_text")


def _child_name(block: nn.Module, attr: str) -> str:
    """Name of the unique direct child of ``block`` that has ``attr`` (e.g. ``o_proj``)."""
    found = [name for name, m in block.named_children() if hasattr(m, attr)]
    if len(found) != 1:
        raise LayerpruneError(
            f"{type(block).__name__}: expected one child with '{attr}', found {len(found)}"
        )
    return found[0]


@dataclass(frozen=True)
class BlockAdapter:
    """Answers structural questions about a causal LM of a supported family."""

    family: str
    attn_name: str = "self_attn"  # the block's child holding o_proj
    mlp_name: str = "mlp"  # the block's child holding down_proj

    @classmethod
    def for_model(cls, model: nn.Module) -> BlockAdapter:
        """Check the family is supported and find the sublayers by introspection."""
        family = getattr(model.config, "model_type", "?")
        if family not in SUPPORTED:
            raise LayerpruneError(
                f"model family '{family}' is not supported (supported: {', '.join(SUPPORTED)})"
            )
        blocks = cls(family).blocks(model)  # raises if the layout differs
        names = getattr(model.config, "layerprune_sublayer_names", None)
        if names:  # a sublayer-pruned checkpoint: block 0 may hold a stand-in
            return cls(family, names[0], names[1])
        return cls(family, _child_name(blocks[0], "o_proj"), _child_name(blocks[0], "down_proj"))

    def decoder(self, model: nn.Module) -> nn.Module:
        """The base transformer (``model.model``): embeddings, blocks, final norm."""
        return model.get_decoder()

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        """The decoder blocks, in order."""
        layers = getattr(self.decoder(model), "layers", None)
        if not isinstance(layers, nn.ModuleList):
            raise LayerpruneError(f"{type(model).__name__} has no decoder.layers ModuleList")
        return layers

    def attention(self, model: nn.Module, i: int) -> nn.Module:
        """Self-attention sublayer of block ``i`` (a ``SkippedAttention`` once removed)."""
        return getattr(self.blocks(model)[i], self.attn_name)

    def mlp(self, model: nn.Module, i: int) -> nn.Module:
        """MLP sublayer of block ``i`` (a ``SkippedMLP`` once removed)."""
        return getattr(self.blocks(model)[i], self.mlp_name)

    def attention_out(self, model: nn.Module, i: int) -> nn.Linear:
        """The projection whose output is the attention's residual-branch contribution."""
        return self.attention(model, i).o_proj

    def mlp_out(self, model: nn.Module, i: int) -> nn.Linear:
        """The projection whose output is the MLP's residual-branch contribution."""
        return self.mlp(model, i).down_proj

    def final_norm(self, model: nn.Module) -> nn.Module:
        """The norm between the last block and ``lm_head``."""
        return self.decoder(model).norm

    def keep_blocks(self, model: nn.Module, kept: list[int]) -> None:
        """Keep only blocks ``kept`` (original indices) and make config and caches agree.

        Renumbers every ``layer_idx`` to 0..n-1 (the KV cache is indexed by it), sets
        ``num_hidden_layers`` (models loop over ``layers[:num_hidden_layers]``) and slices
        ``layer_types`` (Qwen2/Gemma3 pick each layer's attention kind from it).
        """
        layers = self.blocks(model)
        if sorted(set(kept)) != list(kept) or not kept or kept[-1] >= len(layers):
            raise LayerpruneError(f"kept blocks must be increasing indices < {len(layers)}: {kept}")
        self.decoder(model).layers = nn.ModuleList([layers[i] for i in kept])
        for new_idx, block in enumerate(self.blocks(model)):
            for module in block.modules():
                if isinstance(getattr(module, "layer_idx", None), int):
                    module.layer_idx = new_idx
        config = model.config
        if getattr(config, "layer_types", None) is not None:
            config.layer_types = [config.layer_types[i] for i in kept]
        config.num_hidden_layers = len(kept)


def input_device(model: nn.Module) -> torch.device:
    """Where the model's input ids go: its input embedding's device (the first GPU of a model
    split over several with ``device_map``; its outputs come out of the last one)."""
    return model.get_input_embeddings().weight.device


def output_logits(
    model: nn.Module, final_hidden: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """The LM head on final hidden states (after the final norm), with the family's final
    logit soft-capping (Gemma) when its config sets one: what ``model(...).logits`` would be
    at those positions, for callers that run the head on a few positions at a time.

    ``out``: a ``[positions, vocabulary]`` buffer to write into (the same values: the head's
    own matmul, the cap in place), used when the head is a bias-free ``nn.Linear``; callers
    that run the head often keep one, as a fresh output of hundreds of MB costs more in page
    faults than the log-softmax after it.

    The logits are made on the head's device (``final_hidden`` is moved there: the final
    norm and the head may sit on different GPUs of a split model)."""
    head = model.get_output_embeddings()
    cap = getattr(model.config, "final_logit_softcapping", None)
    final_hidden = final_hidden.to(head.weight.device)
    if out is not None and type(head) is nn.Linear and head.bias is None:
        logits = torch.matmul(final_hidden, head.weight.t(), out=out)
        return logits.div_(cap).tanh_().mul_(cap) if cap else logits
    logits = head(final_hidden)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits
