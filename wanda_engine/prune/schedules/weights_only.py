"""The schedule of methods that need no activation statistics (magnitude): every linear of the block
is pruned from its weights alone and nothing is run. Calibration batches a run captured for something
else (the block importance an allocation policy ranks by) are not needed past the importance pass."""

from __future__ import annotations

import torch
import torch.nn as nn

from ...distributed import SINGLE_PROCESS, DataParallel
from ...models.blocks import linear_layers
from ..batches import BlockBatch
from ..methods import PruningMethod, prune_together
from ..sparsity import SparsityTarget


class WeightsOnlySchedule:
    def check_block(self, block: nn.Module) -> None:
        """Any block whose weight matrices are linears (checked by the caller)."""

    def prune_block(
        self, block: nn.Module, batches: list[BlockBatch], method: PruningMethod, target: SparsityTarget,
        replicas: DataParallel = SINGLE_PROCESS,
    ) -> dict[str, torch.Tensor]:
        linears = linear_layers(block)
        return dict(zip(linears, prune_together(method, [(linear.weight.data, None) for linear in linears.values()], target)))


WEIGHTS_ONLY = WeightsOnlySchedule()
