"""Finding the decoder blocks and their linear layers without per-architecture code."""

from __future__ import annotations

import torch.nn as nn


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a causal LM (LLaMA, Mistral, Qwen2, ... keep them in `model.model.layers`).

    Falls back to the first ModuleList whose length is `config.num_hidden_layers`, so close relatives
    with another attribute name still work.
    """
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if isinstance(layers, nn.ModuleList):
        return layers
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return module
    raise ValueError(f"cannot find the decoder blocks of {type(model).__name__}: expected model.model.layers")


def linear_layers(block: nn.Module) -> dict[str, nn.Linear]:
    """Every nn.Linear inside one block, by its name relative to the block (the layers Wanda prunes)."""
    return {name: module for name, module in block.named_modules() if isinstance(module, nn.Linear)}


def blocks_prefix(model: nn.Module) -> str:
    """The state-dict prefix of the decoder blocks, e.g. "model.layers."."""
    blocks = decoder_blocks(model)
    for name, module in model.named_modules():
        if module is blocks:
            return f"{name}."
    return "blocks."


class InMemoryBlocks:
    """The blocks of a model held whole in memory; the streaming counterpart is `StreamedBlocks`."""

    def __init__(self, model: nn.Module) -> None:
        self.blocks = decoder_blocks(model)
        self.prefix = blocks_prefix(model)

    def __len__(self) -> int:
        return len(self.blocks)

    def load(self, index: int) -> nn.Module:
        return self.blocks[index]

    def release(self, index: int, block: nn.Module, pruned: bool) -> None:
        """Called when the loop is done with a block (streaming stores write it out and free it)."""
