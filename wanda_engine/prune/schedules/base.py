"""What every schedule shares: the protocol and the registry (--schedule)."""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn as nn

from ...distributed import SINGLE_PROCESS, DataParallel
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
        self, block: nn.Module, batches: list[BlockBatch], method: PruningMethod, target: SparsityTarget,
        replicas: DataParallel = SINGLE_PROCESS,
    ) -> dict[str, torch.Tensor]:
        """Prune every linear of `block` in place and return name → bool mask (True = pruned), in
        `linear_layers(block)` order; then replace each `batch.hidden` with the pruned block's output.
        `replicas`: in a data-parallel run `batches` are this rank's share, and every statistic is read
        through `replicas.complete` (the same ones in the same order on every rank)."""
        ...


SCHEDULES: Registry[Schedule] = Registry("schedule", "--schedule")
