"""The schedule of methods that need no activation statistics (magnitude): every linear of the block
is pruned from its weights alone, and nothing is run (such a run has no calibration batches)."""

from __future__ import annotations

import torch
import torch.nn as nn

from ...models.blocks import linear_layers
from ..batches import BlockBatch
from ..methods import PruningMethod
from ..sparsity import SparsityTarget


class WeightsOnlySchedule:
    def check_block(self, block: nn.Module) -> None:
        """Any block whose weight matrices are linears (checked by the caller)."""

    def prune_block(
        self, block: nn.Module, batches: list[BlockBatch], method: PruningMethod, target: SparsityTarget
    ) -> dict[str, torch.Tensor]:
        if batches:
            raise ValueError("the weights-only schedule runs no batches; a method needing none was given some")
        return {name: method.prune_(linear.weight.data, None, target) for name, linear in linear_layers(block).items()}


WEIGHTS_ONLY = WeightsOnlySchedule()
