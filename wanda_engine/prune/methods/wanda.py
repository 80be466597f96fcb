"""Wanda: score |W|·sqrt(Σx²), per output row (or per N:M group) the smallest scores are pruned."""

from __future__ import annotations

import torch

import kernels

from ..sparsity import SparsityTarget
from . import METHODS


@METHODS.register("wanda")
class Wanda:
    needs_statistics = True

    def prune_(self, weight: torch.Tensor, sq_norms: torch.Tensor | None, target: SparsityTarget) -> torch.Tensor:
        return kernels.wanda_prune_(weight, sq_norms, target.ratio, n=target.n, m=target.m)
