"""Parsing and validating the sparsity target (--sparsity_type / --sparsity_ratio)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UserError


@dataclass(frozen=True)
class SparsityTarget:
    """Unstructured when n and m are None, else N:M along the input dimension (ratio == n/m)."""

    ratio: float
    n: int | None = None
    m: int | None = None

    @property
    def structured(self) -> bool:
        return self.n is not None

    @property
    def label(self) -> str:
        return f"{self.n}:{self.m}" if self.structured else "unstructured"


def parse_sparsity(sparsity_type: str, sparsity_ratio: float | None) -> SparsityTarget:
    """`sparsity_ratio=None` means "not given": 0.5 for unstructured, N/M for N:M."""
    if sparsity_type == "unstructured":
        ratio = 0.5 if sparsity_ratio is None else float(sparsity_ratio)
        if not 0.0 <= ratio < 1.0:
            raise UserError(f"--sparsity_ratio {sparsity_ratio}: must be in [0, 1), e.g. 0.5")
        return SparsityTarget(ratio)
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", sparsity_type)
    if not match:
        raise UserError(
            f"--sparsity_type {sparsity_type!r}: expected 'unstructured' or N:M with integers, e.g. 2:4 or 4:8"
        )
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m:
        raise UserError(f"--sparsity_type {sparsity_type}: N:M needs 0 < N < M, e.g. 2:4")
    if sparsity_ratio is not None and abs(float(sparsity_ratio) - n / m) > 1e-9:
        raise UserError(
            f"--sparsity_ratio {sparsity_ratio} contradicts --sparsity_type {n}:{m} (ratio {n / m:g}); "
            "omit --sparsity_ratio or set it to N/M"
        )
    return SparsityTarget(n / m, n, m)
