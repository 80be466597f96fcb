"""The block loop of pruning: walk the decoder blocks of a `BlockStore` (the whole model in memory, or
streamed from safetensors shards) in order and let a schedule (prune/schedules/) prune each one, keeping
the bookkeeping: per-layer sparsity, timings, the evaluation windows carried beside the calibration
batches, checkpoints between blocks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
import torch.nn as nn
from tqdm.auto import tqdm

import kernels

from ..distributed import SINGLE_PROCESS, DataParallel
from ..errors import UserError
from ..models.architecture import block_weight_matrices
from ..models.blocks import InMemoryBlocks
from .batches import BlockBatch, call_block_as_returned, store_output
from .methods import PruningMethod
from .schedules import Schedule
from .sparsity import SparsityTarget


@dataclass
class PruneOutcome:
    per_layer: dict[str, float] = field(default_factory=dict)  # full linear name → achieved sparsity
    block_sparsity: list[float] = field(default_factory=list)  # target per block
    pruned_params: int = 0  # weights the method zeroed
    total_params: int = 0  # every weight matrix entry of the pruned blocks (models.architecture.block_weight_matrices)
    prune_s: float = 0.0  # the block loop, without block_io_s and the windows' time
    block_io_s: float = 0.0  # streamed runs: reading each block, writing it out pruned, resume checkpoints

    @property
    def actual_sparsity(self) -> float:
        return self.pruned_params / max(self.total_params, 1)


class BlockStore(Protocol):
    """Where prune_blocks gets each decoder block from, and gives it back to (see models.blocks)."""

    prefix: str

    def __len__(self) -> int: ...

    def load(self, index: int) -> nn.Module: ...

    def release(self, index: int, block: nn.Module, pruned: bool) -> None: ...


@dataclass
class CarriedWindows:
    """Evaluation windows carried through the blocks beside the calibration batches (streamed
    evaluation): their hidden states through each block before it is pruned (`dense`) and after
    (`pruned`), for the dense and the pruned perplexity."""

    dense: list[BlockBatch] = field(default_factory=list)
    pruned: list[BlockBatch] = field(default_factory=list)
    token_ids: torch.Tensor | None = None  # [windows, seqlen]: what the perplexity scores
    seconds: float = 0.0  # time spent moving them, kept out of prune_s
    blocks_return_tuple: bool = False  # how the blocks return their output (the logits are made through the model's forward)


@torch.no_grad()
def prune_blocks(
    blocks: BlockStore | nn.Module,
    batches: list[BlockBatch],
    method: PruningMethod,
    block_targets: list[SparsityTarget],
    *,
    schedule: Schedule,
    progress: bool = True,
    start: int = 0,
    windows: CarriedWindows | None = None,
    after_block: Callable[[int], None] | None = None,
    outcome: PruneOutcome | None = None,
    replicas: DataParallel = SINGLE_PROCESS,
) -> PruneOutcome:
    """Prune decoder blocks `start`.. in order; `batches` hold block `start`'s inputs and are advanced
    in place, and so are the `windows` carried beside them. `schedule` prunes each block (see
    schedules.schedule_for). `after_block(index)` runs once a block is pruned and released (checkpoints).
    `replicas`: a data-parallel run, `batches` and `windows` being this rank's share (`method` should
    then share its masks: `DataParallel.shared_masks`)."""
    store = as_block_store(blocks)
    if len(block_targets) != len(store):
        raise ValueError(f"{len(block_targets)} block targets for {len(store)} blocks")
    outcome = outcome or PruneOutcome(block_sparsity=[t.ratio for t in block_targets])
    started = time.perf_counter()
    windows_seconds = io_seconds = 0.0
    indices = range(start, len(store))
    for index in tqdm(indices, desc="pruning blocks", unit="block", disable=not progress, initial=start, total=len(store)):
        io_started = time.perf_counter()
        block = store.load(index)
        io_seconds += time.perf_counter() - io_started
        if windows is not None:
            windows_started = time.perf_counter()
            _advance(block, windows.dense)
            windows_seconds += time.perf_counter() - windows_started
        try:
            # replicas only when there are several: a schedule written before data parallelism still runs a plain run
            extra = {"replicas": replicas} if replicas.active else {}
            masks = schedule.prune_block(block, batches, method, block_targets[index], **extra)
        except kernels.KernelInputError as exc:  # bad values reached a kernel (e.g. fp16 overflow): the user's to fix
            raise UserError(f"pruning block {index} ({store.prefix}{index}) failed: {exc}") from exc
        for name, mask in masks.items():
            pruned = int(mask.sum())
            outcome.per_layer[f"{store.prefix}{index}.{name}"] = pruned / mask.numel()
            outcome.pruned_params += pruned
        outcome.total_params += sum(param.numel() for param in block_weight_matrices(block).values())
        if windows is not None:
            windows_started = time.perf_counter()
            windows.blocks_return_tuple = _advance(block, windows.pruned)
            windows_seconds += time.perf_counter() - windows_started
        io_started = time.perf_counter()
        store.release(index, block, pruned=True)
        if after_block is not None:
            after_block(index)
        io_seconds += time.perf_counter() - io_started
    if windows is not None:
        windows.seconds += windows_seconds
    # Loading and saving are stages of their own (the whole-model load and save are not in prune_s
    # either), so a streamed run's block reads and writes are counted apart.
    outcome.block_io_s += io_seconds
    outcome.prune_s += time.perf_counter() - started - windows_seconds - io_seconds
    return outcome


def as_block_store(blocks: "BlockStore | nn.Module") -> BlockStore:
    """A whole model in memory becomes an InMemoryBlocks store; a store is returned as is."""
    return InMemoryBlocks(blocks) if isinstance(blocks, nn.Module) else blocks


def _advance(block: nn.Module, batches: list[BlockBatch]) -> bool:
    """Run `batches` through `block`; returns whether the block returns tuples."""
    as_tuple = False
    for batch in batches:
        output, as_tuple = call_block_as_returned(block, batch)
        store_output(batch, output)
    return as_tuple
