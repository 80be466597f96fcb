"""Wanda variant (`--use_variant`): per row, prune the smallest scores whose cumulative sum stays
within alpha · row total, with one alpha per matrix found by bisection (start 0.4, bounds [0, 0.8])
until the matrix sparsity is within 0.001 of the target — the reference's procedure."""

from __future__ import annotations

import torch

import kernels

from ...errors import UserError
from ..sparsity import SparsityTarget


def _mask_for_alpha(score: torch.Tensor, sorted_score: torch.Tensor, cumulative: torch.Tensor, alpha: float) -> torch.Tensor:
    # Entries of the sorted prefix whose running sum stays within alpha · row total.
    count = (cumulative <= alpha * cumulative[:, -1:]).sum(dim=1, keepdim=True)
    threshold = sorted_score.gather(1, (count - 1).clamp(min=0))
    # Like the reference, everything at or below the threshold goes (ties included); empty prefix prunes none.
    return (score <= threshold) & (count > 0)


class WandaVariant:
    name = "wanda_variant"
    needs_statistics = True
    counts_per_row = False

    def prune_(self, weight: torch.Tensor, sq_norms: torch.Tensor | None, target: SparsityTarget) -> torch.Tensor:
        if target.structured:
            raise UserError("--use_variant works with unstructured sparsity only; drop --use_variant or use --sparsity_type unstructured")
        score = kernels.wanda_score(weight.detach(), sq_norms)
        sorted_score = torch.sort(score, dim=1, stable=True).values
        cumulative = torch.cumsum(sorted_score, dim=1)
        alpha, low, high = 0.4, 0.0, 0.8
        mask = _mask_for_alpha(score, sorted_score, cumulative, alpha)
        sparsity = mask.float().mean().item()
        while abs(sparsity - target.ratio) > 0.001 and high - low >= 0.001:
            if sparsity > target.ratio:
                high, alpha = alpha, (alpha + low) / 2
            else:
                low, alpha = alpha, (alpha + high) / 2
            mask = _mask_for_alpha(score, sorted_score, cumulative, alpha)
            sparsity = mask.float().mean().item()
        kernels.zero_pruned_(weight.data, mask)
        return mask
