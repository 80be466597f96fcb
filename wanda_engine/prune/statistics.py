"""The Wanda statistic of every linear of a block, taken while the block runs (see StatisticsPass)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels

from ..distributed import SINGLE_PROCESS, DataParallel
from .batches import BlockBatch, call_block, first_sample


# The order in which blocks of one structure call their linears (see `last_linear_called`).
_CALL_ORDERS: dict[tuple, list[str]] = {}


def last_linear_called(block: nn.Module, linears: dict[str, nn.Linear], batch: BlockBatch) -> str | None:
    """The linear `block` calls last when it calls each linear exactly once (what StatisticsPass learns
    from a first batch), found by running the batch's first sample through it; None otherwise. Kept per
    block structure (class and modules): every block of a model runs the same code."""
    key = (type(block), *((name, type(module)) for name, module in block.named_modules()))
    if key not in _CALL_ORDERS:
        calls: list[str] = []
        hooks = [linear.register_forward_pre_hook(lambda *_, name=name: calls.append(name))
                 for name, linear in linears.items()]
        try:
            call_block(block, first_sample(batch) or batch)
        finally:
            for hook in hooks:
                hook.remove()
        _CALL_ORDERS[key] = calls
    calls = _CALL_ORDERS[key]
    return calls[-1] if sorted(calls) == sorted(linears) else None


class StatisticsPass:
    """Accumulates the Wanda statistic (fp32) per distinct linear input while a block runs.

    Linears fed the very same tensor (q/k/v; gate/up) share one statistic, found from tensor identity
    at run time, so no per-architecture table is needed. The statistic is the reference's running mean
    over samples of ||x_j||² (`kernels.RunningSqNorms`), accumulated through
    `kernels.linear_with_running_sq_norms`, which fuses it into the GEMM on CUDA.

    `output_discarded=True` (the caller ignores the block's output, as the reference schedule's
    statistics pass does): when the first batch called every linear exactly once, the last one called
    (down_proj in LLaMA blocks) feeds nothing but that output, so from the second batch on its GEMM is
    skipped (its statistic is still taken) and zeros stand in for its output. A block that calls a
    linear after it is refused with a RuntimeError instead of giving wrong statistics. `known_tail`
    skips it from the first batch on: for a data-parallel rank whose first batch is not the run's
    first, so that every batch's statistic comes from the kernel a single process uses for it (on CUDA
    the fused GEMM kernel and the separate one round differently).

    `replicas` (a data-parallel run): the statistic covers every rank's samples, combined when first
    read (`statistic`), which every rank must then do in the same order.
    """

    def __init__(self, linears: dict[str, nn.Linear], *, output_discarded: bool = False,
                 replicas: DataParallel = SINGLE_PROCESS, known_tail: str | None = None) -> None:
        self.linears = linears
        self.replicas = replicas
        self.stats: dict[str, kernels.RunningSqNorms] = {}
        self.group_of: dict[str, str] = {}  # linear name → name of the linear owning its statistic
        self.output_discarded = output_discarded
        self.skipped_tail: str | None = known_tail if output_discarded else None  # its GEMM is skipped
        self._calls: list[str] = []  # linears called in the current batch, in order
        self._batches = 0
        self._seen: dict[int, tuple[torch.Tensor, str]] = {}
        self._token_mask: torch.Tensor | None = None

    def __enter__(self) -> "StatisticsPass":
        for name, linear in self.linears.items():
            linear.forward = self._forward_for(name, linear)
        return self

    def __exit__(self, *exc) -> None:
        for linear in self.linears.values():
            del linear.forward
        self._seen.clear()

    def start_batch(self, token_mask: torch.Tensor | None) -> None:
        if (self.output_discarded and self.skipped_tail is None and self._batches == 1
                and sorted(self._calls) == sorted(self.linears)):
            self.skipped_tail = self._calls[-1]
        self._batches += 1
        self._calls.clear()
        self._seen.clear()
        self._token_mask = token_mask

    def statistic(self, name: str) -> torch.Tensor:
        """fp32 [in_features]: mean over calibration samples of ||x_j||² of this linear's input."""
        return self.replicas.complete(self.stats[self.group_of[name]])

    def _forward_for(self, name: str, linear: nn.Linear):
        def forward(x: torch.Tensor) -> torch.Tensor:
            tail = self.skipped_tail
            if tail is not None and self._calls and self._calls[-1] == tail:
                raise RuntimeError(
                    f"{name} ran after {tail}, whose output was skipped as unused: this block does not call its "
                    "linears in a fixed order; create the StatisticsPass with output_discarded=False"
                )
            self._calls.append(name)
            seen = self._seen.get(id(x))
            shared = seen is not None and seen[0] is x
            if not shared:
                self._seen[id(x)] = (x, name)  # holding x keeps its id from being reused in this batch
            owner = self.group_of.setdefault(name, seen[1] if shared else name)
            if name == tail:  # its output is not needed: the statistic only
                if not shared:
                    kernels.update_running_sq_norms(self._statistic_for(owner, linear, x), x, token_mask=self._token_mask)
                return x.new_zeros(*x.shape[:-1], linear.out_features)
            if shared:
                return F.linear(x, linear.weight, linear.bias)
            stat = self._statistic_for(owner, linear, x)
            return kernels.linear_with_running_sq_norms(x, linear.weight, linear.bias, stat, token_mask=self._token_mask)

        return forward

    def _statistic_for(self, owner: str, linear: nn.Linear, x: torch.Tensor) -> kernels.RunningSqNorms:
        stat = self.stats.get(owner)
        if stat is None:
            stat = self.stats[owner] = self.replicas.new_statistic(linear.in_features, x.device)
        token_mask = self._token_mask
        if token_mask is not None and tuple(token_mask.shape) != tuple(x.shape[:-1]):
            raise RuntimeError(f"{owner}: input shape {tuple(x.shape)} does not match the token mask {tuple(token_mask.shape)}")
        return stat
