"""The schedule of methods that need no activation statistics (magnitude): every linear of the block
is pruned from its weights alone and nothing is run. Calibration batches a run captured for something
else (the block importance an allocation policy ranks by) are not needed past the importance pass."""

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
        return {name: method.prune_(linear.weight.data, None, target) for name, linear in linear_layers(block).items()}


WEIGHTS_ONLY = WeightsOnlySchedule()
