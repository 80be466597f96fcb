"""Hidden states on their way through the decoder blocks: what the first block receives for each batch
(captured from a real forward), calling one block on a batch with those kwargs, and keeping its output."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..models.blocks import decoder_blocks

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
    return call_block_as_returned(block, batch)[0]


def call_block_as_returned(block: nn.Module, batch: BlockBatch) -> tuple[torch.Tensor, bool]:
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


def first_sample(batch: BlockBatch) -> BlockBatch | None:
    """The batch cut to its first sample: hidden states, token mask, and every kwarg tensor (or tuple
    of tensors) whose first dimension is the batch's. None for a one-sample batch."""
    size = batch.hidden.shape[0]
    if size <= 1:
        return None

    def cut(value):
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == size:
            return value[:1]
        if isinstance(value, tuple):
            return tuple(cut(item) for item in value)
        return value

    token_mask = None if batch.token_mask is None else batch.token_mask[:1]
    return BlockBatch(batch.hidden[:1], {key: cut(value) for key, value in batch.kwargs.items()}, token_mask)


def copy_batches(batches: list[BlockBatch]) -> list[BlockBatch]:
    """The batches with hidden states of their own (kwargs and token masks shared)."""
    return [BlockBatch(b.hidden.clone(), b.kwargs, b.token_mask) for b in batches]
