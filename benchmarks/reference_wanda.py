"""A straightforward re-statement of the reference implementation's Wanda schedule, written from its
documented semantics (DESIGN.md §1), used as the yardstick for mask parity (tests) and speed
(benchmarks). Deliberately unoptimised, like the original:

- calibration samples go through each block one at a time (batch size 1);
- a forward hook per linear keeps the running mean of ||x_j||² over samples, in fp32;
- unstructured masks come from a full stable ascending sort per row;
- N:M masks from a Python loop over column groups (stable sort per group: lower index wins ties);
- two passes per block: dense (statistics), then pruned (inputs of the next block);
- the whole model stays in memory.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from wanda_engine.models.blocks import decoder_blocks, linear_layers


class _RunningSqNorm:
    """Per input column: mean over samples of ||x_j||², updated as the reference does."""

    def __init__(self, columns: int, device: torch.device) -> None:
        self.mean_sq = torch.zeros(columns, dtype=torch.float32, device=device)
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        samples = x.shape[0] if x.dim() == 3 else 1
        columns_by_tokens = x.reshape(-1, x.shape[-1]).t().float()
        self.mean_sq *= self.count / (self.count + samples)
        self.count += samples
        self.mean_sq += torch.norm(columns_by_tokens, p=2, dim=1) ** 2 / self.count


def reference_mask(score: torch.Tensor, ratio: float, n: int | None = None, m: int | None = None) -> torch.Tensor:
    mask = torch.zeros_like(score, dtype=torch.bool)
    if n is not None:
        for start in range(0, score.shape[1], m):
            group = score[:, start : start + m].float()
            lowest = torch.sort(group, dim=1, stable=True)[1][:, :n]
            mask.scatter_(1, start + lowest, True)
    else:
        order = torch.sort(score, dim=-1, stable=True)[1]
        mask.scatter_(1, order[:, : int(score.shape[1] * ratio)], True)
    return mask


class _Catcher(Exception):
    pass


@torch.no_grad()
def reference_prune(
    model: nn.Module, input_ids: torch.Tensor, ratio: float, n: int | None = None, m: int | None = None
) -> dict[str, torch.Tensor]:
    """Prune `model` in place with Wanda on the windows `input_ids` ([nsamples, seqlen]); return the masks."""
    blocks = decoder_blocks(model)
    device = next(model.parameters()).device
    inputs: list[torch.Tensor] = []
    block_kwargs: dict = {}

    def catch(_module, args, kwargs):
        inputs.append(args[0] if args else kwargs["hidden_states"])
        block_kwargs.update({k: v for k, v in kwargs.items() if k not in ("cache", "past_key_values", "use_cache", "hidden_states")})
        raise _Catcher

    handle = blocks[0].register_forward_pre_hook(catch, with_kwargs=True)
    for sample in input_ids:
        try:
            model(input_ids=sample.unsqueeze(0).to(device), use_cache=False)
        except _Catcher:
            pass
    handle.remove()

    def run(block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        out = block(hidden, use_cache=False, **block_kwargs)
        return out[0] if isinstance(out, tuple) else out

    masks: dict[str, torch.Tensor] = {}
    for index, block in enumerate(blocks):
        linears = linear_layers(block)
        stats = {name: _RunningSqNorm(layer.in_features, device) for name, layer in linears.items()}
        handles = [
            layer.register_forward_hook(lambda _mod, inp, _out, name=name: stats[name].add(inp[0].data))
            for name, layer in linears.items()
        ]
        for hidden in inputs:
            run(block, hidden)
        for h in handles:
            h.remove()
        for name, layer in linears.items():
            score = layer.weight.data.abs().float() * torch.sqrt(stats[name].mean_sq.reshape(1, -1))
            mask = reference_mask(score, ratio, n, m)
            layer.weight.data[mask] = 0
            masks[f"{index}.{name}"] = mask
        inputs = [run(block, hidden) for hidden in inputs]
    return masks
