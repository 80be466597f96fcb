"""Pruning schedules (`--schedule`): how one decoder block's linears get their statistics, are pruned,
and how the block's outputs for the next block are produced. One file per schedule.

The block loop itself (loading blocks, progress, bookkeeping) is `prune.schedule.prune_blocks`; a
schedule only handles one materialised block at a time, for methods that need activation statistics
(magnitude pruning needs no forward pass, so it bypasses schedules).
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn as nn

from ...registry import Registry
from ..methods import PruningMethod
from ..schedule import BlockBatch
from ..sparsity import SparsityTarget


class Schedule(Protocol):
    summary: str  # one line for --help and reports

    def check_block(self, block: nn.Module) -> None:
        """Raise UserError when this schedule cannot prune blocks like `block` (whose parameters may be
        on the meta device): called on the model's structure before any weight is read."""
        ...

    def prune_block(
        self, block: nn.Module, batches: list[BlockBatch], method: PruningMethod, target: SparsityTarget
    ) -> dict[str, torch.Tensor]:
        """Prune every linear of `block` in place and return name → bool mask (True = pruned), in
        `linear_layers(block)` order; then replace each `batch.hidden` with the pruned block's output."""
        ...


SCHEDULES: Registry[Schedule] = Registry("schedule", "--schedule")

from . import reference, sequential  # noqa: E402,F401  (registration side effects)

__all__ = ["SCHEDULES", "Schedule"]
