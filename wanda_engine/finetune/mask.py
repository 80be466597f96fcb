"""The sparsity mask kept through fine-tuning: taken from the pruned model's zeros before training,
gradients of pruned entries zeroed as they are computed, and the weights multiplied by the mask after
every optimizer step (AdamW's weight decay and moments would otherwise move them); zero counts per
linear are what the checks compare (before, after training, after reloading the output)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from transformers import TrainerCallback

from ..models.blocks import decoder_blocks, linear_layers


def _block_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The decoder blocks' linears by a stable name ("3.mlp.up_proj"), the same with or without LoRA
    (peft wraps the model, keeps each original linear as `base_layer` and adds lora_A/lora_B linears)."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    found = {}
    for index, block in enumerate(decoder_blocks(model)):
        for name, module in linear_layers(block).items():
            if "lora_" in name:
                continue
            found[f"{index}.{name.removesuffix('.base_layer')}"] = module
    return found


def zero_counts(model: nn.Module) -> dict[str, int]:
    """Zero entries of each block linear's weight."""
    return {name: int((module.weight == 0).sum()) for name, module in _block_linears(model).items()}


class SparsityMask:
    def __init__(self, model: nn.Module) -> None:
        self.masks = {name: (module.weight != 0) for name, module in _block_linears(model).items()
                      if bool((module.weight == 0).any())}
        self._hooks: list = []

    @property
    def pruned_linears(self) -> int:
        return len(self.masks)

    def attach(self, model: nn.Module) -> None:
        """Zero the gradient of every pruned entry as backward computes it."""
        linears = _block_linears(model)
        for name, mask in self.masks.items():
            weight = linears[name].weight
            if weight.requires_grad:
                pruned = ~mask.to(weight.device)  # boolean: a byte per entry, not a copy of the weights
                self.masks[name] = mask.to(weight.device)
                self._hooks.append(weight.register_hook(lambda grad, pruned=pruned: grad.masked_fill(pruned, 0)))

    def detach(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    @torch.no_grad()
    def apply(self, model: nn.Module, measure: bool = False) -> float | None:
        """Zero the pruned entries again; with `measure`, return the norm of what was removed (a device
        sync per linear: only after a LoRA merge, not after every step)."""
        removed = 0.0
        linears = _block_linears(model)
        for name, mask in self.masks.items():
            weight = linears[name].weight
            pruned = ~mask.to(weight.device)
            if measure:
                removed += float(weight.masked_select(pruned).double().pow(2).sum())
            weight.masked_fill_(pruned, 0)
        return math.sqrt(removed) if measure else None


class KeepMask(TrainerCallback):
    """Re-applies the mask after each optimizer step (on_step_end runs after it)."""

    def __init__(self, mask: SparsityMask) -> None:
        self.mask = mask

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self.mask.apply(model)
