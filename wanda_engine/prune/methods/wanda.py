"""Wanda: score |W|·sqrt(Σx²), per output row (or per N:M group) the smallest scores are pruned."""

from __future__ import annotations

import torch

import kernels

from ..sparsity import SparsityTarget
from .base import METHODS
from .wanda_variant import WandaVariant


@METHODS.register("wanda")
class Wanda:
    name = "wanda"
    needs_statistics = True
    counts_per_row = True

    def variant(self) -> "WandaVariant":
        """`--use_variant`: per-row cumulative-score threshold instead of a fixed count per row."""
        return WandaVariant()

    def prune_(self, weight: torch.Tensor, sq_norms: torch.Tensor | None, target: SparsityTarget) -> torch.Tensor:
        return kernels.wanda_prune_(weight, sq_norms, target.ratio, n=target.n, m=target.m)
