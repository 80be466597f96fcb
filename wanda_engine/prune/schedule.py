"""The block loop of pruning, and what every schedule shares (see prune/schedules/ for the schedules).

Shared here: capturing the first block's inputs, calling a block with its captured kwargs, the
fp32 statistics pass, and `prune_blocks`, which walks the blocks of a `BlockStore` (whole model in
memory, or streamed from safetensors shards) and lets the chosen schedule prune each one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

import kernels

from ..errors import UserError
from ..models.architecture import block_weight_matrices
from ..models.blocks import decoder_blocks, linear_layers
from .methods import PruningMethod
from .sparsity import SparsityTarget

if TYPE_CHECKING:
    from .schedules import Schedule

# Keys of the captured block kwargs that must not be replayed: a KV cache object would make every
# later call attend to earlier samples (silently wrong statistics).
_DROPPED_KWARGS = ("cache", "past_key_values", "past_key_value", "use_cache")


@dataclass
class BlockBatch:
    hidden: torch.Tensor          # [b, L, hidden] input of the current block
    kwargs: dict                  # what the model passes each block (position embeddings, mask, ...)
    token_mask: torch.Tensor | None  # bool [b, L]; False marks padding, excluded from statistics


class _Captured(Exception):
    pass


@torch.no_grad()
def capture_block_inputs(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, batch_size: int, device: torch.device,
    storage: torch.device | None = None,
) -> list[BlockBatch]:
    """Run the model up to its first block for each calibration batch and keep what that block receives.
    `storage`: where the hidden states live (default: `device`); host memory is pinned for fast copies."""
    first_block = decoder_blocks(model)[0]
    captured: dict = {}

    def grab(_module, args, kwargs):
        captured["hidden"] = args[0] if args else kwargs["hidden_states"]
        captured["kwargs"] = {k: v for k, v in kwargs.items() if k not in _DROPPED_KWARGS and k != "hidden_states"}
        raise _Captured

    handle = first_block.register_forward_pre_hook(grab, with_kwargs=True)
    batches = []
    try:
        for start in range(0, input_ids.shape[0], batch_size):
            ids = input_ids[start : start + batch_size].to(device)
            mask = attention_mask[start : start + batch_size].to(device)
            try:
                model(input_ids=ids, attention_mask=mask, use_cache=False)
            except _Captured:
                pass
            token_mask = mask.bool()
            hidden = captured["hidden"]
            if storage is not None and hidden.device != storage:
                hidden = hidden.to(storage)
                if storage.type == "cpu" and torch.cuda.is_available():
                    hidden = hidden.pin_memory()
            batches.append(BlockBatch(hidden, dict(captured["kwargs"]), None if bool(token_mask.all()) else token_mask))
    finally:
        handle.remove()
    return batches


def call_block(block: nn.Module, batch: BlockBatch) -> torch.Tensor:
    """One decoder block on one batch, with the kwargs captured from the model (no KV cache). Hidden
    states kept in host memory (they did not fit on the GPU) go to the block's device and back."""
    return _call_block(block, batch)[0]


def _call_block(block: nn.Module, batch: BlockBatch) -> tuple[torch.Tensor, bool]:
    """call_block's output, and whether the block returned it as a tuple (some models' blocks do)."""
    hidden = batch.hidden
    compute = next(block.parameters()).device
    out = block(hidden.to(compute, non_blocking=True), use_cache=False, **batch.kwargs)
    as_tuple = isinstance(out, tuple)
    out = out[0] if as_tuple else out
    return (out if out.device == hidden.device else out.to(hidden.device)), as_tuple


def store_output(batch: BlockBatch, output: torch.Tensor) -> None:
    """Make a block's output the batch's hidden states, written over the old ones in place when the
    shapes allow: the buffers captured once are reused by every block, so no long-lived tensor is
    allocated per block (each one fragments glibc's heap, and peak RSS creeps up), and host buffers
    stay pinned for fast copies to the GPU."""
    hidden = batch.hidden
    if output.shape == hidden.shape and output.dtype == hidden.dtype and output.data_ptr() != hidden.data_ptr():
        hidden.copy_(output)
    else:
        batch.hidden = output.to(hidden.device)


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


@dataclass
class PruneOutcome:
    per_layer: dict[str, float] = field(default_factory=dict)  # full linear name → achieved sparsity
    block_sparsity: list[float] = field(default_factory=list)  # target per block
    pruned_params: int = 0  # weights the method zeroed
    total_params: int = 0  # every weight matrix entry of the pruned blocks (models.architecture.block_weight_matrices)
    prune_s: float = 0.0  # the block loop, without block_io_s and the riders' time
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
class Riders:
    """Hidden states that only travel through the blocks beside the calibration batches (streamed
    evaluation): `dense` through each block before it is pruned, `pruned` after."""

    dense: list[BlockBatch] = field(default_factory=list)
    pruned: list[BlockBatch] = field(default_factory=list)
    seconds: float = 0.0  # time spent moving them, kept out of prune_s
    blocks_return_tuple: bool = False  # how the blocks return their output (the logits are made through the model's forward)


@torch.no_grad()
def prune_blocks(
    blocks: BlockStore | nn.Module,
    batches: list[BlockBatch],
    method: PruningMethod,
    block_targets: list[SparsityTarget],
    *,
    schedule: "Schedule | None" = None,
    progress: bool = True,
    start: int = 0,
    riders: Riders | None = None,
    after_block: Callable[[int], None] | None = None,
    outcome: PruneOutcome | None = None,
) -> PruneOutcome:
    """Prune decoder blocks `start`.. in order; `batches` hold block `start`'s inputs and are advanced
    in place. `after_block(index)` runs once a block is pruned and released (checkpoints)."""
    store = as_block_store(blocks)
    if schedule is None:
        from .schedules import SCHEDULES

        schedule = SCHEDULES.get("reference")
    if len(block_targets) != len(store):
        raise ValueError(f"{len(block_targets)} block targets for {len(store)} blocks")
    outcome = outcome or PruneOutcome(block_sparsity=[t.ratio for t in block_targets])
    started = time.perf_counter()
    rider_seconds = io_seconds = 0.0
    indices = range(start, len(store))
    for index in tqdm(indices, desc="pruning blocks", unit="block", disable=not progress, initial=start, total=len(store)):
        io_started = time.perf_counter()
        block = store.load(index)
        io_seconds += time.perf_counter() - io_started
        if riders is not None:
            rider_started = time.perf_counter()
            _advance(block, riders.dense)
            rider_seconds += time.perf_counter() - rider_started
        try:
            if method.needs_statistics:
                masks = schedule.prune_block(block, batches, method, block_targets[index])
            else:  # e.g. magnitude: no activations involved, nothing to run
                masks = {name: method.prune_(linear.weight.data, None, block_targets[index]) for name, linear in linear_layers(block).items()}
        except kernels.KernelInputError as exc:  # bad values reached a kernel (e.g. fp16 overflow): the user's to fix
            raise UserError(f"pruning block {index} ({store.prefix}{index}) failed: {exc}") from exc
        for name, mask in masks.items():
            pruned = int(mask.sum())
            outcome.per_layer[f"{store.prefix}{index}.{name}"] = pruned / mask.numel()
            outcome.pruned_params += pruned
        outcome.total_params += sum(param.numel() for param in block_weight_matrices(block).values())
        if riders is not None:
            rider_started = time.perf_counter()
            riders.blocks_return_tuple = _advance(block, riders.pruned)
            rider_seconds += time.perf_counter() - rider_started
        io_started = time.perf_counter()
        store.release(index, block, pruned=True)
        if after_block is not None:
            after_block(index)
        io_seconds += time.perf_counter() - io_started
    if riders is not None:
        riders.seconds += rider_seconds
    # Loading and saving are stages of their own (the whole-model load and save are not in prune_s
    # either), so a streamed run's block reads and writes are counted apart.
    outcome.block_io_s += io_seconds
    outcome.prune_s += time.perf_counter() - started - rider_seconds - io_seconds
    return outcome


def as_block_store(blocks: "BlockStore | nn.Module") -> BlockStore:
    """A whole model in memory becomes an InMemoryBlocks store; a store is returned as is."""
    if isinstance(blocks, nn.Module):
        from ..models.blocks import InMemoryBlocks

        return InMemoryBlocks(blocks)
    return blocks


def _advance(block: nn.Module, batches: list[BlockBatch]) -> bool:
    """Run `batches` through `block`; returns whether the block returns tuples."""
    as_tuple = False
    for batch in batches:
        output, as_tuple = _call_block(block, batch)
        store_output(batch, output)
    return as_tuple
