"""`--schedule reference`: the reference implementation's semantics, batched (DESIGN.md §1).

Every calibration batch runs through the *dense* block while fp32 statistics accumulate per distinct
linear input; all linears are pruned; then the batches run through the *pruned* block to produce the
next block's inputs. Two forward passes per block; masks reproduce the reference's.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ...distributed import SINGLE_PROCESS, DataParallel
from ...models.blocks import linear_layers
from ..methods import PruningMethod, prune_together
from ..batches import BlockBatch, call_block, store_output
from ..statistics import StatisticsPass, last_linear_called
from ..sparsity import SparsityTarget
from .base import SCHEDULES


@SCHEDULES.register("reference")
class ReferenceSchedule:

    def check_block(self, block: nn.Module) -> None:
        """Any block whose weight matrices are linears (checked by the caller) can be run so."""

    def prune_block(
        self, block: nn.Module, batches: list[BlockBatch], method: PruningMethod, target: SparsityTarget,
        replicas: DataParallel = SINGLE_PROCESS,
    ) -> dict[str, torch.Tensor]:
        linears = linear_layers(block)
        # A data-parallel rank other than 0 starts at a batch that is not the run's first: it skips the
        # last linear's GEMM from its first batch on, as a single process does from its second.
        known_tail = last_linear_called(block, linears, batches[0]) if batches and not replicas.is_main else None
        with StatisticsPass(linears, output_discarded=True, replicas=replicas, known_tail=known_tail) as statistics:
            for batch in batches:
                statistics.start_batch(batch.token_mask)
                call_block(block, batch)
        sq_norms = [statistics.statistic(name) for name in linears]  # completed in this order on every rank
        masks = dict(zip(linears, prune_together(
            method, [(linear.weight.data, stat) for linear, stat in zip(linears.values(), sq_norms)], target)))
        for batch in batches:
            store_output(batch, call_block(block, batch))
        return masks
