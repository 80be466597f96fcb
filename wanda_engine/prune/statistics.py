"""The Wanda statistic of every linear of a block, taken while the block runs (see StatisticsPass)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels


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
    linear after it is refused with a RuntimeError instead of giving wrong statistics.
    """

    def __init__(self, linears: dict[str, nn.Linear], *, output_discarded: bool = False) -> None:
        self.linears = linears
        self.stats: dict[str, kernels.RunningSqNorms] = {}
        self.group_of: dict[str, str] = {}  # linear name → name of the linear owning its statistic
        self.output_discarded = output_discarded
        self.skipped_tail: str | None = None  # linear whose GEMM is skipped (see output_discarded)
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
        if self.output_discarded and self._batches == 1 and sorted(self._calls) == sorted(self.linears):
            self.skipped_tail = self._calls[-1]
        self._batches += 1
        self._calls.clear()
        self._seen.clear()
        self._token_mask = token_mask

    def statistic(self, name: str) -> torch.Tensor:
        """fp32 [in_features]: mean over calibration samples of ||x_j||² of this linear's input."""
        return self.stats[self.group_of[name]].mean_sq

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
            stat = self.stats[owner] = kernels.RunningSqNorms(linear.in_features, x.device)
        token_mask = self._token_mask
        if token_mask is not None and tuple(token_mask.shape) != tuple(x.shape[:-1]):
            raise RuntimeError(f"{owner}: input shape {tuple(x.shape)} does not match the token mask {tuple(token_mask.shape)}")
        return stat
