"""What every schedule shares: the protocol and the registry (--schedule)."""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn as nn

from ...registry import Registry
from ..batches import BlockBatch
from ..methods import PruningMethod
from ..sparsity import SparsityTarget


class Schedule(Protocol):
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
