"""`--schedule reference`: the reference implementation's semantics, batched (DESIGN.md §1).

Every calibration batch runs through the *dense* block while fp32 statistics accumulate per distinct
linear input; all linears are pruned; then the batches run through the *pruned* block to produce the
next block's inputs. Two forward passes per block; masks reproduce the reference's.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ...models.blocks import linear_layers
from ..methods import PruningMethod
from ..batches import BlockBatch, call_block, store_output
from ..statistics import StatisticsPass
from ..sparsity import SparsityTarget
from .base import SCHEDULES


@SCHEDULES.register("reference")
class ReferenceSchedule:

    def check_block(self, block: nn.Module) -> None:
        """Any block whose weight matrices are linears (checked by the caller) can be run so."""

    def prune_block(
        self, block: nn.Module, batches: list[BlockBatch], method: PruningMethod, target: SparsityTarget
    ) -> dict[str, torch.Tensor]:
        linears = linear_layers(block)
        with StatisticsPass(linears, output_discarded=True) as statistics:
            for batch in batches:
                statistics.start_batch(batch.token_mask)
                call_block(block, batch)
        masks = {name: method.prune_(linear.weight.data, statistics.statistic(name), target) for name, linear in linears.items()}
        for batch in batches:
            store_output(batch, call_block(block, batch))
        return masks
