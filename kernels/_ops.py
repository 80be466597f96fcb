"""torch.library custom ops, so torch.compile sees each kernel call as one opaque node (no graph
break, no tracing into Triton/host syncs). The `backend` argument is already resolved to
"torch" or "triton" by the Python API in `kernels/__init__.py`, which also validates arguments.

The API calls the entry points at the bottom (`accumulate_sq_norms`, ...): the custom op while
torch.compile traces, the plain function in eager mode, where the op wrapper adds nothing but cost:
its first call in a process without transformers imports some 800 modules (0.9 s, 85 MB), and in a
CPU pruning run it held memory (SmolLM2, sequential schedule: peak RSS 914 → 876 MB without it).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .act_norms import (
    accumulate_sq_norms_torch,
    accumulate_sq_norms_triton,
    linear_with_sq_norms_torch,
    linear_with_sq_norms_triton,
)
from .wanda_mask import wanda_mask_torch, wanda_mask_triton, zero_pruned_

NAMESPACE = "wanda_kernels"


def _accumulate_sq_norms(
    x: torch.Tensor, sq_norms: torch.Tensor, token_mask: Optional[torch.Tensor], backend: str
) -> None:
    if backend == "triton":
        accumulate_sq_norms_triton(x, sq_norms, token_mask)
    else:
        accumulate_sq_norms_torch(x, sq_norms, token_mask)


def _linear_with_sq_norms(
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


def _wanda_mask(
    weight: torch.Tensor, sq_norms: Optional[torch.Tensor], k_or_n: int, m: int, backend: str
) -> torch.Tensor:
    if backend == "triton":
        return wanda_mask_triton(weight, sq_norms, k_or_n, m, write_weight=False)
    return wanda_mask_torch(weight, sq_norms, k_or_n, m)


def _wanda_prune(
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


accumulate_sq_norms_op = torch.library.custom_op(
    f"{NAMESPACE}::accumulate_sq_norms", _accumulate_sq_norms, mutates_args=("sq_norms",)
)
linear_with_sq_norms_op = torch.library.custom_op(
    f"{NAMESPACE}::linear_with_sq_norms", _linear_with_sq_norms, mutates_args=("sq_norms",)
)
wanda_mask_op = torch.library.custom_op(f"{NAMESPACE}::wanda_mask", _wanda_mask, mutates_args=())
wanda_prune_op = torch.library.custom_op(f"{NAMESPACE}::wanda_prune_", _wanda_prune, mutates_args=("weight",))


@accumulate_sq_norms_op.register_fake
def _(x, sq_norms, token_mask, backend):
    return None


@linear_with_sq_norms_op.register_fake
def _(x, weight, bias, sq_norms, token_mask, backend):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


@wanda_mask_op.register_fake
def _(weight, sq_norms, k_or_n, m, backend):
    return weight.new_empty(weight.shape, dtype=torch.bool)


@wanda_prune_op.register_fake
def _(weight, sq_norms, k_or_n, m, backend):
    return weight.new_empty(weight.shape, dtype=torch.bool)


def _eager_or_op(impl: Callable, op: Callable) -> Callable:
    def call(*args):
        return op(*args) if torch.compiler.is_compiling() else impl(*args)

    return call


accumulate_sq_norms = _eager_or_op(_accumulate_sq_norms, accumulate_sq_norms_op)
linear_with_sq_norms = _eager_or_op(_linear_with_sq_norms, linear_with_sq_norms_op)
wanda_mask = _eager_or_op(_wanda_mask, wanda_mask_op)
wanda_prune_ = _eager_or_op(_wanda_prune, wanda_prune_op)
