"""The reference's form of the Wanda statistic: per input column j, the mean over calibration samples
of ||x_j||² (the squared L2 norm over that sample's tokens), updated as the reference's hook does

    mean *= n / (n + b);  n += b;  mean += (Σ over the b new samples of ||x_j||²) / n

Why beside the plain Σx² kernels: the ranking is the same (mean = Σ/N), the fp32 rounding is not, and
one flipped mask entry early in a deep model changes every later block's inputs. The torch path folds
the samples of a batch in one at a time, with the same norm the reference computes on a batch-1
forward, so a batched run reproduces a batch-1 run bit for bit (SmolLM2, 30 blocks: 99.89% → 99.999%
identical mask entries). The Triton path takes the batch sum from the fused kernel and folds it in
once per batch, which is the reference's own update for a batch of b samples.
"""

from __future__ import annotations

from typing import Optional

import torch


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


def num_samples(x: torch.Tensor) -> int:
    return int(x.shape[0]) if x.dim() >= 3 else 1


def update_running_sq_norms_torch(stat: RunningSqNorms, x: torch.Tensor, token_mask: Optional[torch.Tensor]) -> None:
    for per_sample in sample_sq_norms(x, token_mask):
        stat.fold(per_sample, 1)

