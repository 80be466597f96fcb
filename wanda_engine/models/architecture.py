"""What the engine can prune and run, checked on a model's structure (parameters on the meta device)
before any weight is read, so that a model it cannot handle is refused by name instead of being
pruned partly (or not at all) and reported as done."""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn as nn

from ..errors import UserError
from .blocks import blocks_prefix, decoder_blocks, linear_layers


def text_config(model_config):
    """The language model's config (a multimodal config keeps it in `text_config`)."""
    return model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config


def context_length(config) -> int:
    """The model's context (max_position_embeddings; 2048 where the config does not say)."""
    return int(getattr(config, "max_position_embeddings", 0) or 0) or 2048


def _is_norm(module: nn.Module) -> bool:
    """A normalisation layer (LayerNorm, RMSNorm, a model's own *Norm class): its weights scale, they do
    not project, even where they are 2-D (Cohere's per-head q/k norms)."""
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or "norm" in type(module).__name__.lower()


def _weight_matrices(block: nn.Module):
    """(name relative to the block, owning module, parameter name, parameter) for every parameter of
    two or more dimensions inside one block, normalisation weights excepted."""
    for module_name, module in block.named_modules():
        if _is_norm(module):
            continue
        for param_name, param in module.named_parameters(recurse=False):
            if param.dim() >= 2:
                yield (f"{module_name}.{param_name}" if module_name else param_name), module, param_name, param


def block_weight_matrices(block: nn.Module) -> dict[str, torch.Tensor]:
    """Every weight matrix inside one block, by its name relative to the block: what a pruned block's
    sparsity is counted over."""
    return {name: param for name, _module, _param_name, param in _weight_matrices(block)}


def _what_is_needed(name: str, module: nn.Module, param: torch.Tensor) -> str:
    kind = type(module).__name__
    if param.dim() >= 3 and "expert" in f"{name} {kind}".lower():
        return f"{kind} holds one matrix per expert (mixture of experts): pruning it needs statistics per expert from the tokens routed to it"
    if kind == "Conv1D":
        return "Conv1D is a linear layer with a transposed [in, out] weight (GPT-2 style): pruning it needs scores on the transposed weight"
    if param.dim() >= 3:
        return f"{kind} holds a {param.dim()}-D weight: pruning it needs a statistic of the inputs each of its slices sees"
    return f"{kind} uses its weight outside nn.Linear: pruning it needs a statistic of that weight's input"


def check_prunable(model: nn.Module) -> None:
    """Refuse a model whose decoder blocks hold weight matrices that are not nn.Linear weights (the
    layers Wanda, and this engine, prune): they would be left dense while the report claimed the target."""
    prefix = blocks_prefix(model)
    blocks = decoder_blocks(model)
    found: dict[str, tuple[list[int], str]] = {}
    for index, block in enumerate(blocks):
        for name, module, param_name, param in _weight_matrices(block):
            if isinstance(module, nn.Linear) and param_name == "weight":
                continue
            indices, _ = found.setdefault(name, ([], _what_is_needed(name, module, param)))
            indices.append(index)
    if not found:
        return
    by_need: dict[str, list[str]] = defaultdict(list)
    for name, (indices, need) in found.items():
        where = "*" if len(indices) == len(blocks) else ",".join(map(str, indices))
        by_need[need].append(f"{prefix}{where}.{name}")
    parts = "; ".join(f"{', '.join(names)} ({need})" for need, names in by_need.items())
    raise UserError(
        f"--model: its decoder blocks hold weight matrices the engine cannot prune, which would stay dense: {parts}; "
        "not supported yet: use a model whose block weights are all nn.Linear (README.md, Architectures)"
    )


def check_pattern_fits(model: nn.Module, n: int, m: int) -> None:
    """N:M needs every pruned linear's input size to be a multiple of M: refuse before any work."""
    prefix = blocks_prefix(model)
    for index, block in enumerate(decoder_blocks(model)):
        for name, linear in linear_layers(block).items():
            if linear.in_features % m:
                raise UserError(
                    f"--sparsity_type {n}:{m}: {prefix}{index}.{name} has {linear.in_features} input "
                    f"features, not a multiple of {m}; choose an M that divides it (e.g. 2:4 or 4:8)"
                )


def check_blocks_share_kwargs(model_config, seqlen: int) -> None:
    """Every block is called with the kwargs captured in front of the first block (attention mask,
    rotary embeddings). Models whose layers are of several attention types can need other kwargs in
    other blocks: refuse them, except where only the mask differs and the windows fit in the sliding
    window (there the sliding and full masks are the same)."""
    config = text_config(model_config)
    layer_types = sorted(set(getattr(config, "layer_types", None) or ()))
    if len(layer_types) <= 1:
        return
    kinds = " and ".join(layer_types)
    rope = getattr(config, "rope_parameters", None)
    if isinstance(rope, dict) and any(kind in rope for kind in layer_types):
        raise UserError(
            f"--model: its {kinds} layers use different rotary embeddings, and the engine gives every block the first "
            "block's; models with per-layer-type rotary embeddings (Gemma 3, ...) are not supported yet: use another model"
        )
    window = getattr(config, "sliding_window", None)
    if not window:
        raise UserError(
            f"--model: it mixes {kinds} layers, and the engine gives every block the first block's attention mask; "
            "this mix is not supported yet: use another model"
        )
    if seqlen > window:
        raise UserError(
            f"--seqlen {seqlen}: this model mixes {kinds} layers with a {window}-token sliding window, and the engine "
            f"gives every block the first block's attention mask, which is right only up to the window; "
            f"use --seqlen {window} or less"
        )


__all__ = [
    "block_weight_matrices", "check_blocks_share_kwargs", "check_pattern_fits", "check_prunable", "context_length",
    "text_config",
]
