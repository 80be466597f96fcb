"""Magnitude baseline: |W| with one threshold per whole matrix (the reference's choice), or per
N:M group. Exactly int(numel · ratio) entries are pruned, ties to the lower flat index (the reference
keeps `|W| <= threshold`, which prunes one entry more when there are no ties)."""

from __future__ import annotations

import torch

import kernels

from ..sparsity import SparsityTarget
from .base import METHODS


@METHODS.register("magnitude")
class Magnitude:
    name = "magnitude"
    needs_statistics = False
    counts_per_row = False

    def prune_(self, weight: torch.Tensor, sq_norms: torch.Tensor | None, target: SparsityTarget) -> torch.Tensor:
        if target.structured:
            return kernels.wanda_prune_(weight, None, target.ratio, n=target.n, m=target.m)
        # One "row" holding the whole matrix gives a single matrix-wide threshold. The torch path,
        # on any device: the Triton mask kernel runs one program per row, so one row this wide
        # would run on a single SM.
        flat = weight.view(1, -1)
        return kernels.wanda_prune_(flat, None, target.ratio, backend="torch").view_as(weight)
