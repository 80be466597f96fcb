"""The reference's form of the Wanda statistic: per input column j, the mean over calibration samples
of ||x_j||² (the squared L2 norm over that sample's tokens), updated as the reference's hook does

    mean *= n / (n + b);  n += b;  mean += (Σ over the b new samples of ||x_j||²) / n

    RunningSqNorms(in_features, device=None)          .mean_sq (fp32 [in]), .samples
    update_running_sq_norms(stat, x, token_mask=None, backend="auto", *, per_sample=True) -> stat
    linear_with_running_sq_norms(x, weight, bias, stat, token_mask=None, backend="auto") -> y
    sample_sq_norms(x, token_mask=None) -> [samples, in]

Why beside the plain Σx² of sq_norms.py: the ranking is the same (mean = Σ/N), the fp32 rounding is
not, and one flipped mask entry early in a deep model changes every later block's inputs. The torch
path folds the samples of a batch in one at a time, with the same norm the reference computes on a
batch-1 forward, so a batched run reproduces a batch-1 run bit for bit. The Triton path takes the
batch sum from the fused kernel of sq_norms.py and folds it in once per batch, which is the
reference's own update for a batch of b samples. No kernel of its own.
"""

from __future__ import annotations

from typing import Optional

import torch

from .common import (
    KernelInputError,
    check_activations,
    check_same_device,
    check_sq_norms,
    check_token_mask,
    resolve_backend,
)
from .sq_norms import accumulate_sq_norms, linear_with_sq_norms


class RunningSqNorms:
    """fp32 running mean over samples of each input column's squared norm, plus the sample count."""

    def __init__(self, in_features: int, device: torch.device | str | None = None) -> None:
        self.mean_sq = torch.zeros(in_features, dtype=torch.float32, device=device)
        self.samples = 0

    def fold(self, batch_sq_norms: torch.Tensor, samples: int) -> None:
        """Add `samples` samples whose squared norms sum to `batch_sq_norms` (fp32 [in_features])."""
        if samples <= 0:
            return
        self.mean_sq.mul_(self.samples / (self.samples + samples))
        self.samples += samples
        self.mean_sq.add_(batch_sq_norms / self.samples)


# --------------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------------


def _check_running_stat(stat: RunningSqNorms, x: torch.Tensor) -> None:
    if not isinstance(stat, RunningSqNorms):
        raise KernelInputError(f"stat must be a kernels.RunningSqNorms, not {type(stat).__name__}")
    check_sq_norms(stat.mean_sq, x.shape[-1], name="stat.mean_sq")


# --------------------------------------------------------------------------------------------------
# Torch path (per sample)
# --------------------------------------------------------------------------------------------------


def _as_samples(x: torch.Tensor, token_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """x as [samples, tokens, in] fp32 with padding tokens zeroed; a 2-D x is one sample."""
    xs = x.float()
    if token_mask is not None:
        xs = xs * token_mask.unsqueeze(-1)
    if xs.dim() == 1:
        return xs.view(1, 1, -1)
    if xs.dim() == 2:
        return xs.unsqueeze(0)
    return xs.reshape(xs.shape[0], -1, xs.shape[-1])


def sample_sq_norms(x: torch.Tensor, token_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """[samples, in] fp32: each sample's squared L2 norm over its tokens, per input column (padding
    excluded). Bit-identical to the reference's torch.norm on that sample alone."""
    return torch.linalg.vector_norm(_as_samples(x, token_mask), 2, dim=1) ** 2


def _num_samples(x: torch.Tensor) -> int:
    return int(x.shape[0]) if x.dim() >= 3 else 1


def _fold_each_sample(stat: RunningSqNorms, x: torch.Tensor, token_mask: Optional[torch.Tensor]) -> None:
    for per_sample in sample_sq_norms(x, token_mask):
        stat.fold(per_sample, 1)


# --------------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------------


def update_running_sq_norms(
    stat: RunningSqNorms,
    x: torch.Tensor,
    token_mask: Optional[torch.Tensor] = None,
    backend: str = "auto",
    *,
    per_sample: bool = True,
) -> RunningSqNorms:
    """Fold the samples of x ([samples, tokens, in]; 2-D = one sample) into the reference's running
    mean of per-sample ||x_j||², padding tokens excluded.

    per_sample (torch backend only): True folds the samples one at a time with the reference's
    norm, bit-identical to a batch-1 run; False folds the batch's sum of squares once, as the Triton
    backend always does (the same statistic up to rounding, and several times faster on CPU)."""
    check_activations(x)
    _check_running_stat(stat, x)
    check_token_mask(token_mask, tuple(x.shape[:-1]))
    check_same_device(x=x, sq_norms=stat.mean_sq, token_mask=token_mask)
    be = resolve_backend(backend, x, stat.mean_sq)
    if be == "torch" and per_sample:
        _fold_each_sample(stat, x, token_mask)
    else:
        batch_sum = torch.zeros_like(stat.mean_sq)
        accumulate_sq_norms(x, batch_sum, token_mask, backend=be)
        stat.fold(batch_sum, _num_samples(x))
    return stat


def linear_with_running_sq_norms(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    stat: RunningSqNorms,
    token_mask: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """y = F.linear(x, weight, bias), folding x's samples into `stat` as update_running_sq_norms does
    (Triton: the batch sum comes from the same read of x as the GEMM)."""
    be = resolve_backend(backend, x, weight)
    if be == "torch":
        y = linear_with_sq_norms(x, weight, bias, backend=be)  # validates x, weight, bias
        update_running_sq_norms(stat, x, token_mask, backend=be)
        return y
    _check_running_stat(stat, x)
    batch_sum = torch.zeros_like(stat.mean_sq)
    y = linear_with_sq_norms(x, weight, bias, sq_norms=batch_sum, token_mask=token_mask, backend=be)
    stat.fold(batch_sum, _num_samples(x))
    return y
