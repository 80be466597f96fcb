"""`--schedule sequential`: every linear of a block is applied once per calibration sample, and each
linear's statistic comes from inputs produced by the already-pruned linears upstream of it.

Within a block, in order: q/k/v are pruned from the statistic of the attention input; attention runs
with the pruned q/k/v while o_proj's input statistic accumulates; o_proj is pruned; the residual and
the MLP input are formed while gate/up's statistic accumulates; gate/up are pruned; the MLP
intermediate act(gate)·up is formed while down_proj's statistic accumulates; down_proj is pruned and
the block output replaces each `batch.hidden`.

The block is split at its linears without re-implementing attention: `self_attn` run with `o_proj`
swapped for an identity returns o_proj's input, and likewise `mlp` without `down_proj`; where that
MLP computes act(gate)·up, the intermediate is then formed in place (checked equal once). That relies
on the LLaMA block wiring (pre-norm attention and MLP with residuals), so other structures are
refused, and the split is checked against the block's own forward before anything is pruned.

Memory: a statistic must be complete before its linear may run, so each pass keeps, for every batch,
what the next pass starts from (norm output, attention output, MLP input, MLP intermediate), on the
device the hidden states live on, and drops it once consumed. Besides the hidden states, the peak is
all batches' MLP intermediates (intermediate_size / hidden_size × hidden states, 2.7–3.5× for LLaMA
models) plus one batch's MLP input and 1024 tokens of up_proj output.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
import transformers.activations

import kernels

from ...distributed import SINGLE_PROCESS, DataParallel
from ...errors import UserError
from ...models.blocks import linear_layers
from ..methods import PruningMethod, prune_together
from ..batches import BlockBatch, call_block, first_sample, store_output
from ..sparsity import SparsityTarget
from .base import SCHEDULES

_BLOCK_CHILDREN = {"input_layernorm", "self_attn", "post_attention_layernorm", "mlp"}
_ATTENTION_INPUTS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
_MLP_INPUTS = ("mlp.gate_proj", "mlp.up_proj")
# Activation modules (exact types) whose forward is F.silu, so the activation may run in place; the
# result is still compared with the MLP's own forward once per structure (verify).
_SILU_TYPES: tuple[type, ...] = tuple(
    t for t in (nn.SiLU, getattr(transformers.activations, "SiLUActivation", None)) if t is not None
)
_UP_PROJ_CHUNK_ROWS = 1024  # tokens per up_proj call when the MLP intermediate is formed in place
_LINEARS = {*_ATTENTION_INPUTS, "self_attn.o_proj", *_MLP_INPUTS, "mlp.down_proj"}

# Relative tolerance (of the output's largest magnitude) for the split-vs-block check: the split runs
# the same operations in the same order, so only rounding-level differences are acceptable.
_CHECK_TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 2e-2}

# Block structures (by module classes, the MLP's activation included) whose split was already checked
# against their own forward, mapped to whether the in-place MLP intermediate equals the MLP's own.
# Whether the split is valid is a property of the block's code, which every block of a model shares,
# so it is checked on the first sample of the first block of each structure only: checking every block
# would cost two extra forwards per block.
_VERIFIED_STRUCTURES: dict[tuple[type, ...], bool] = {}


def _refuse(block: nn.Module, reason: str) -> UserError:
    return UserError(
        f"--schedule sequential does not support {type(block).__name__} blocks ({reason}); use --schedule reference"
    )


@contextmanager
def _bypassed(parent: nn.Module, name: str) -> Iterator[nn.Module]:
    """Swap `parent.<name>` for an identity, so `parent` returns what that linear would have received."""
    linear = getattr(parent, name)
    setattr(parent, name, nn.Identity())
    try:
        yield linear
    finally:
        setattr(parent, name, linear)


def _to_compute(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    # Hidden states may live in (pinned) host memory when they do not fit on the GPU, as in call_block.
    return x.to(device, non_blocking=True)


def _add_residual(batch: BlockBatch, update: torch.Tensor) -> torch.Tensor:
    """batch.hidden += update (the residual connection), in place where hidden lives on the compute
    device; returns the new hidden states on the compute device."""
    if batch.hidden.device == update.device:
        return batch.hidden.add_(update)
    result = _to_compute(batch.hidden, update.device) + update
    store_output(batch, result)
    return result


def _check_layout(block: nn.Module) -> None:
    """Refuse a block whose submodules are not the LLaMA layout the split relies on (works on a block
    whose parameters are on meta, so it runs before any weight is read)."""
    children = {name for name, _ in block.named_children()}
    if children != _BLOCK_CHILDREN:
        raise _refuse(block, f"submodules {sorted(children)}, expected {sorted(_BLOCK_CHILDREN)}")
    linear_names = set(linear_layers(block))
    if linear_names != _LINEARS:
        raise _refuse(block, f"linear layers {sorted(linear_names)}, expected {sorted(_LINEARS)}")


class _SplitBlock:
    """A LLaMA-style decoder block split at its linears: norm → attention → o_proj → residual → norm →
    MLP up to down_proj → down_proj → residual. Methods take and return tensors on the block's device."""

    def __init__(self, block: nn.Module) -> None:
        _check_layout(block)
        self.block = block
        self.attention = block.self_attn
        self.mlp = block.mlp
        self.device = next(block.parameters()).device
        self.structure = tuple(type(module) for _, module in sorted(block.named_children())) + (
            type(block), type(getattr(block.mlp, "act_fn", None)),
        )
        # Set by verify: form the MLP intermediate in place (only once shown equal to the MLP's own).
        self.in_place_mlp = False

    def attention_input(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.block.input_layernorm(hidden)

    def attention_mix(self, attention_input: torch.Tensor, batch: BlockBatch) -> torch.Tensor:
        """o_proj's input; call inside `_bypassed(self.attention, "o_proj")`. The kwargs are passed as
        the block passes them to self_attn (call_block's, without a cache)."""
        out = self.attention(hidden_states=attention_input, use_cache=False, **batch.kwargs)
        return out[0] if isinstance(out, tuple) else out

    def mlp_input(self, residual: torch.Tensor) -> torch.Tensor:
        return self.block.post_attention_layernorm(residual)

    def mlp_intermediate(self, mlp_input: torch.Tensor) -> torch.Tensor:
        """down_proj's input: the MLP's own forward with down_proj swapped out, or, once verify has shown
        them equal, the same formed in place (`_in_place_intermediate`)."""
        if self.in_place_mlp:
            return self._in_place_intermediate(mlp_input)
        with _bypassed(self.mlp, "down_proj"):
            return self.mlp(mlp_input)

    def _in_place_intermediate(self, mlp_input: torch.Tensor) -> torch.Tensor | None:
        """act(gate_proj(x)) · up_proj(x) formed in gate_proj's output buffer, still in cache from the
        GEMM, where the LLaMA MLP's forward writes two fresh [tokens × intermediate] tensors (several
        times faster on CPU: docs/measurements.md). None without `act_fn`."""
        mlp = self.mlp
        act = getattr(mlp, "act_fn", None)
        if act is None:
            return None
        gate = mlp.gate_proj(mlp_input)
        if type(act) in _SILU_TYPES:
            F.silu(gate, inplace=True)
        else:
            gate = act(gate)
        # up_proj's output in row chunks: a whole one would add to the schedule's memory peak. Each output row is
        # computed from its own input row; on CPU the chunks give the whole GEMM's rows bit for bit
        # (tests/test_sequential.py), elsewhere a library may pick another kernel for fewer rows.
        rows_in, rows_out = mlp_input.reshape(-1, mlp_input.shape[-1]), gate.view(-1, gate.shape[-1])
        for start in range(0, rows_in.shape[0], _UP_PROJ_CHUNK_ROWS):
            rows = slice(start, start + _UP_PROJ_CHUNK_ROWS)
            rows_out[rows].mul_(mlp.up_proj(rows_in[rows]))
        return gate

    def dense_forward(self, batch: BlockBatch) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor | None, torch.Tensor]]]:
        """The block output computed through the split, and for every linear whose statistic is taken
        from a norm output: (the input the linear actually received, that norm output)."""
        received: dict[str, torch.Tensor] = {}
        linears = linear_layers(self.block)
        hooks = [
            linears[name].register_forward_pre_hook(lambda _m, args, name=name: received.__setitem__(name, args[0]))
            for name in (*_ATTENTION_INPUTS, *_MLP_INPUTS)
        ]
        try:
            hidden = _to_compute(batch.hidden, self.device)
            attention_input = self.attention_input(hidden)
            with _bypassed(self.attention, "o_proj") as o_proj:
                residual = hidden + o_proj(self.attention_mix(attention_input, batch))
            mlp_input = self.mlp_input(residual)
            output = residual + self.mlp.down_proj(self.mlp_intermediate(mlp_input))
        finally:
            for hook in hooks:
                hook.remove()
        pairs = {name: (received.get(name), attention_input) for name in _ATTENTION_INPUTS}
        pairs.update({name: (received.get(name), mlp_input) for name in _MLP_INPUTS})
        return output, pairs

    @torch.no_grad()
    def verify(self, batch: BlockBatch) -> None:
        """Refuse the block unless the split reproduces `call_block` and q/k/v and gate/up read exactly
        the norm outputs their statistics are taken from; then allow the in-place MLP intermediate if
        it equals the MLP's own bit for bit. Checked on the batch's first sample (the wiring is the
        code's, not the data's), and on the whole batch before refusing, in case cutting the kwargs
        to one sample is what failed."""
        if self.structure in _VERIFIED_STRUCTURES:
            self.in_place_mlp = _VERIFIED_STRUCTURES[self.structure]
            return
        sample = first_sample(batch)
        if sample is not None:
            try:
                self._verify_on(sample)
                return
            except Exception:  # noqa: BLE001 - the whole batch decides
                pass
        self._verify_on(batch)

    def _verify_on(self, batch: BlockBatch) -> None:
        self.in_place_mlp = False  # the wiring is checked through the modules' own forwards
        expected = _to_compute(call_block(self.block, batch), self.device)
        got, statistic_inputs = self.dense_forward(batch)
        tolerance = _CHECK_TOLERANCE.get(expected.dtype, 2e-2) * float(expected.abs().max().clamp(min=1e-6))
        if got.shape != expected.shape or not torch.allclose(got, expected, rtol=0.0, atol=tolerance):
            raise _refuse(self.block, "its forward is not norm → attention → residual → norm → MLP → residual")
        for name, (received, norm_output) in statistic_inputs.items():
            if received is None or received.shape != norm_output.shape or not torch.allclose(
                received, norm_output, rtol=0.0, atol=tolerance
            ):
                raise _refuse(self.block, f"{name} does not read the norm output directly")
        sample = statistic_inputs[_MLP_INPUTS[0]][1][:1]
        in_place = self._in_place_intermediate(sample)
        self.in_place_mlp = in_place is not None and torch.equal(in_place, self.mlp_intermediate(sample))
        _VERIFIED_STRUCTURES[self.structure] = self.in_place_mlp


@SCHEDULES.register("sequential")
class SequentialSchedule:

    def check_block(self, block: nn.Module) -> None:
        _check_layout(block)

    @torch.no_grad()
    def prune_block(
        self, block: nn.Module, batches: list[BlockBatch], method: PruningMethod, target: SparsityTarget,
        replicas: DataParallel = SINGLE_PROCESS,
    ) -> dict[str, torch.Tensor]:
        if not batches:
            raise ValueError("the sequential schedule needs at least one calibration batch")
        split = _SplitBlock(block)
        split.verify(batches[0])
        device = split.device
        linears = linear_layers(block)
        masks: dict[str, torch.Tensor] = {}

        def new_statistic(name: str) -> kernels.RunningSqNorms:
            # The same statistic as StatisticsPass (the reference's running mean), over every rank's samples.
            return replicas.new_statistic(linears[name].in_features, device)

        # q/k/v read the block input, as in the reference schedule, so their statistic is folded per
        # sample as StatisticsPass folds it (block 0's q/k/v masks are the reference's). The other
        # linears' inputs already differ from the reference's, so their statistic is folded once per
        # batch: on CPU the per-sample norm is a slow strided reduction (docs/measurements.md).
        def accumulate(statistic: kernels.RunningSqNorms, x: torch.Tensor, batch: BlockBatch) -> None:
            kernels.update_running_sq_norms(statistic, x, batch.token_mask, per_sample=False)

        def prune_group(names: tuple[str, ...], statistic: kernels.RunningSqNorms) -> None:
            sq_norms = replicas.complete(statistic)
            masks.update(zip(names, prune_together(method, [(linears[name].weight.data, sq_norms) for name in names], target)))

        # The statistics cannot be fused into the consuming linear's GEMM (linear_with_running_sq_norms):
        # a linear may only run once its statistic is complete and it is pruned. So every pass keeps,
        # per batch, what the next pass starts from, and each kept tensor is dropped as soon as it is
        # consumed. The peak is every batch's MLP intermediate, plus one batch's MLP input and a chunk
        # of up_proj output while the last intermediate is formed.
        held: list[torch.Tensor | None]

        def keep(x: torch.Tensor, batch: BlockBatch) -> torch.Tensor:
            return x.to(batch.hidden.device)  # where the hidden states live (host memory if they must)

        def keep_norm_output(x: torch.Tensor, batch: BlockBatch) -> torch.Tensor | None:
            # With the hidden states in host memory, recomputing a norm on the device is cheaper than
            # a round trip over the bus: keep it only where it was computed.
            return x if batch.hidden.device == x.device else None

        def take(index: int, recompute_from_hidden: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
            x, held[index] = held[index], None
            if x is None:
                return recompute_from_hidden(_to_compute(batches[index].hidden, device))
            return _to_compute(x, device)

        attention_statistic = new_statistic(_ATTENTION_INPUTS[0])
        held = []
        for batch in batches:
            attention_input = split.attention_input(_to_compute(batch.hidden, device))
            kernels.update_running_sq_norms(attention_statistic, attention_input, batch.token_mask)
            held.append(keep_norm_output(attention_input, batch))
        prune_group(_ATTENTION_INPUTS, attention_statistic)

        o_statistic = new_statistic("self_attn.o_proj")
        with _bypassed(split.attention, "o_proj"):
            for index, batch in enumerate(batches):
                mix = split.attention_mix(take(index, split.attention_input), batch)
                accumulate(o_statistic, mix, batch)
                held[index] = keep(mix, batch)
        prune_group(("self_attn.o_proj",), o_statistic)

        mlp_statistic = new_statistic(_MLP_INPUTS[0])
        for index, batch in enumerate(batches):
            # The block input is no longer needed: the post-attention residual takes its place.
            residual = _add_residual(batch, linears["self_attn.o_proj"](take(index)))
            mlp_input = split.mlp_input(residual)
            accumulate(mlp_statistic, mlp_input, batch)
            held[index] = keep_norm_output(mlp_input, batch)
        prune_group(_MLP_INPUTS, mlp_statistic)

        down_statistic = new_statistic("mlp.down_proj")
        for index, batch in enumerate(batches):
            intermediate = split.mlp_intermediate(take(index, split.mlp_input))
            accumulate(down_statistic, intermediate, batch)
            held[index] = keep(intermediate, batch)
        prune_group(("mlp.down_proj",), down_statistic)

        for index, batch in enumerate(batches):
            _add_residual(batch, linears["mlp.down_proj"](take(index)))
        return {name: masks[name] for name in linears}
