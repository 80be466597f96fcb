"""Perplexity with the reference protocol: the text tokenized once, cut into non-overlapping windows
of seqlen (remainder dropped), the mean next-token cross-entropy per window, ppl = exp(mean over windows)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..distributed import SINGLE_PROCESS, DataParallel
from ..errors import UserError
from ..models.blocks import decoder_blocks

# Logits of one eval batch are held in fp32; keep them under ~1 GiB.
_LOGIT_BUDGET = 2**28


def window_count(n_tokens: int, seqlen: int, limit: int | None = None) -> int:
    """How many windows the protocol scores: whole seqlen windows (the remainder dropped), at most `limit`."""
    count = n_tokens // seqlen
    return count if limit is None else min(count, limit)


# The reference scores only the first 256 windows of its C4 validation text.
C4_WINDOWS = 256


def reference_eval_ids(text_spec: str, input_ids: torch.Tensor, seqlen: int) -> torch.Tensor:
    """The tokens of an evaluation text as the reference scores them: C4 cut to its first 256 windows."""
    return input_ids[: C4_WINDOWS * seqlen] if text_spec == "c4" else input_ids


def eval_windows(input_ids: torch.Tensor, seqlen: int, limit: int | None = None) -> torch.Tensor:
    """[n_windows, seqlen] non-overlapping windows of a 1-D token sequence."""
    n_windows = window_count(input_ids.numel(), seqlen, limit)
    if n_windows == 0:
        raise UserError(
            f"--seqlen {seqlen}: the evaluation text has only {input_ids.numel()} tokens, fewer than one window; "
            "use a smaller --seqlen or a longer evaluation text"
        )
    return input_ids.reshape(-1)[: n_windows * seqlen].view(n_windows, seqlen)


def eval_batch_size(model_config, seqlen: int, batch_size: int) -> int:
    """Windows per forward in `perplexity`: --batch_size, fewer where a batch's fp32 logits would pass
    the budget."""
    vocab = int(getattr(model_config, "vocab_size", 32000))
    return max(1, min(batch_size, _LOGIT_BUDGET // (seqlen * vocab)))


@torch.no_grad()
def perplexity(
    model: nn.Module,
    input_ids: torch.Tensor,
    seqlen: int,
    *,
    limit: int | None = None,
    batch_size: int = 1,
    progress: bool = True,
    desc: str = "perplexity",
    replicas: DataParallel = SINGLE_PROCESS,
) -> tuple[float, int]:
    """(perplexity, number of windows) of `model` on the token sequence `input_ids`. `replicas`: a
    data-parallel run, each rank scoring a share of whole batches of windows (the window losses are
    gathered in order, so the result is the single process's)."""
    all_windows = eval_windows(input_ids, seqlen, limit)
    device = next(model.parameters()).device
    batch_size = eval_batch_size(model.config, seqlen, batch_size)
    share = replicas.share(all_windows.shape[0], batch_size)
    windows = all_windows[share.start : share.stop]
    window_losses = [torch.zeros(0, dtype=torch.float64)]
    bar = tqdm(total=windows.shape[0], desc=desc, unit="window", disable=not progress)
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start : start + batch_size].to(device)
        logits = model(input_ids=batch, use_cache=False).logits.float()
        losses = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="none"
        ).view(batch.shape[0], -1)
        window_losses.append(losses.mean(dim=1).double().cpu())
        bar.update(batch.shape[0])
    bar.close()
    losses = replicas.gather(torch.cat(window_losses))
    return math.exp(losses.mean().item()), int(all_windows.shape[0])


# Tokens per logits chunk in the streamed evaluation: 1024 × a 128k vocabulary in fp32 is 0.5 GiB.
_TOKENS_PER_CHUNK = 1024


class _Outputs:
    """The hidden states the stand-ins return, and in which form (the real blocks' form: a tensor, or a
    tuple led by it)."""

    def __init__(self, as_tuple: bool) -> None:
        self.as_tuple = as_tuple
        self.hidden: torch.Tensor | None = None


class _StandIn(nn.Module):
    """Stands in for one decoder block: returns the hidden states it is given to return. Other attributes
    are the block's (a model's forward may read one, e.g. the block's attention type)."""

    def __init__(self, block: nn.Module, outputs: _Outputs) -> None:
        super().__init__()
        object.__setattr__(self, "_block", block)  # not a submodule: its parameters are not this one's
        self._outputs = outputs

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(object.__getattribute__(self, "_block"), name)

    def forward(self, *args, **kwargs):
        return (self._outputs.hidden,) if self._outputs.as_tuple else self._outputs.hidden


@torch.no_grad()
def perplexity_from_hidden(
    model: nn.Module, final_hidden: list[torch.Tensor], windows: torch.Tensor, *, blocks_return_tuple: bool = False,
    replicas: DataParallel = SINGLE_PROCESS,
) -> float:
    """Perplexity from the last block's outputs (streamed evaluation: the windows travelled through
    the blocks beside the calibration batches). The logits come from the model's own forward, with its
    decoder blocks replaced by stand-ins that return those outputs, so that whatever the model does
    after its blocks (final norm, head, logit soft-capping or scaling) is done as in the model itself;
    every parameter outside the blocks must be materialised. Same protocol as `perplexity`; the logits
    are made a chunk of tokens at a time, so their memory does not grow with batch size or vocabulary.
    `replicas`: a data-parallel run, `windows` being this rank's share (losses gathered in order)."""
    blocks = decoder_blocks(model)
    originals = list(blocks)
    outputs = _Outputs(blocks_return_tuple)
    device = model.get_input_embeddings().weight.device
    window_losses = []
    start = 0
    try:
        for index, block in enumerate(originals):
            blocks[index] = _StandIn(block, outputs)
        for hidden in final_hidden:
            targets = windows[start : start + hidden.shape[0]].to(device)
            start += hidden.shape[0]
            for window_hidden, window_ids in zip(hidden, targets):
                nll = torch.zeros((), dtype=torch.float64, device=device)
                for begin in range(0, window_hidden.shape[0] - 1, _TOKENS_PER_CHUNK):
                    end = min(begin + _TOKENS_PER_CHUNK, window_hidden.shape[0] - 1)
                    outputs.hidden = window_hidden[None, begin:end].to(device)
                    logits = model(input_ids=window_ids[None, begin:end], use_cache=False).logits[0].float()
                    nll += F.cross_entropy(logits, window_ids[begin + 1 : end + 1], reduction="sum").double()
                window_losses.append(float(nll) / (window_hidden.shape[0] - 1))
    finally:
        for index, block in enumerate(originals):
            blocks[index] = block
    if start != windows.shape[0]:
        raise ValueError(f"{start} hidden states for {windows.shape[0]} windows")
    window_losses = replicas.gather_floats(window_losses)
    return math.exp(sum(window_losses) / len(window_losses))
