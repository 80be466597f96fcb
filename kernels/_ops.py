"""torch.library custom ops, so torch.compile sees each kernel call as one opaque node (no graph
break, no tracing into Triton/host syncs). The `backend` argument is already resolved to
"torch" or "triton" by the Python API in `kernels/__init__.py`, which also validates arguments.
"""

from __future__ import annotations

from typing import Optional

import torch

from .act_norms import (
    accumulate_sq_norms_torch,
    accumulate_sq_norms_triton,
    linear_with_sq_norms_torch,
    linear_with_sq_norms_triton,
)
from .wanda_mask import wanda_mask_torch, wanda_mask_triton, zero_pruned_

NAMESPACE = "wanda_kernels"


@torch.library.custom_op(f"{NAMESPACE}::accumulate_sq_norms", mutates_args=("sq_norms",))
def accumulate_sq_norms_op(
    x: torch.Tensor, sq_norms: torch.Tensor, token_mask: Optional[torch.Tensor], backend: str
) -> None:
    if backend == "triton":
        accumulate_sq_norms_triton(x, sq_norms, token_mask)
    else:
        accumulate_sq_norms_torch(x, sq_norms, token_mask)


@accumulate_sq_norms_op.register_fake
def _(x, sq_norms, token_mask, backend):
    return None


@torch.library.custom_op(f"{NAMESPACE}::linear_with_sq_norms", mutates_args=("sq_norms",))
def linear_with_sq_norms_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    sq_norms: Optional[torch.Tensor],
    token_mask: Optional[torch.Tensor],
    backend: str,
) -> torch.Tensor:
    if backend == "triton":
        return linear_with_sq_norms_triton(x, weight, bias, sq_norms, token_mask)
    return linear_with_sq_norms_torch(x, weight, bias, sq_norms, token_mask)


@linear_with_sq_norms_op.register_fake
def _(x, weight, bias, sq_norms, token_mask, backend):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


@torch.library.custom_op(f"{NAMESPACE}::wanda_mask", mutates_args=())
def wanda_mask_op(
    weight: torch.Tensor, sq_norms: Optional[torch.Tensor], k_or_n: int, m: int, backend: str
) -> torch.Tensor:
    if backend == "triton":
        return wanda_mask_triton(weight, sq_norms, k_or_n, m, write_weight=False)
    return wanda_mask_torch(weight, sq_norms, k_or_n, m)


@wanda_mask_op.register_fake
def _(weight, sq_norms, k_or_n, m, backend):
    return weight.new_empty(weight.shape, dtype=torch.bool)


@torch.library.custom_op(f"{NAMESPACE}::wanda_prune_", mutates_args=("weight",))
def wanda_prune_op(
    weight: torch.Tensor, sq_norms: Optional[torch.Tensor], k_or_n: int, m: int, backend: str
) -> torch.Tensor:
    if backend == "triton":
        if weight.stride(1) == 1:
            return wanda_mask_triton(weight, sq_norms, k_or_n, m, write_weight=True)
        # Non-unit inner stride (rare): prune a contiguous copy, then write it back.
        wc = weight.contiguous()
        mask = wanda_mask_triton(wc, sq_norms, k_or_n, m, write_weight=True)
        weight.copy_(wc)
        return mask
    # Torch path: the mask is complete (and validated) before the weight is touched.
    mask = wanda_mask_torch(weight, sq_norms, k_or_n, m)
    zero_pruned_(weight, mask)
    return mask


@wanda_prune_op.register_fake
def _(weight, sq_norms, k_or_n, m, backend):
    return weight.new_empty(weight.shape, dtype=torch.bool)
