"""Wanda kernels: activation statistics and per-row pruning masks, with Triton and torch backends.

Public API (all validate their arguments and raise KernelInputError, a ValueError, with a one-line
message):

    accumulate_sq_norms(x, sq_norms, token_mask=None, backend="auto") -> sq_norms
    linear_with_sq_norms(x, weight, bias=None, sq_norms=None, token_mask=None, backend="auto") -> y
    wanda_mask(weight, sq_norms, sparsity=0.5, *, n=None, m=None, backend="auto") -> bool mask
    wanda_prune_(weight, sq_norms, sparsity=0.5, *, n=None, m=None, backend="auto") -> bool mask
    RunningSqNorms(in_features, device)                         the reference's running-mean statistic
    update_running_sq_norms(stat, x, token_mask=None, backend="auto", *, per_sample=True) -> stat
    linear_with_running_sq_norms(x, weight, bias, stat, token_mask=None, backend="auto") -> y
    wanda_score(weight, sq_norms) -> fp32 |W|·sqrt(s);  zero_pruned_(weight, mask)  (for methods
    that choose their own mask, e.g. the Wanda variant; unvalidated helpers)

backend: "auto" = Triton for CUDA tensors when triton imports, torch otherwise; "triton" forces
Triton (CPU tensors need TRITON_INTERPRET=1 set before import); "torch" forces torch.
Masks: True = pruned. Oracles for tests: `wanda_mask_reference`, `sq_norms_reference`.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from . import _ops
from ._common import (
    HAS_TRITON,
    KernelInputError,
    check_mask_args,
    check_same_device,
    check_sq_norms,
    check_token_mask,
    resolve_backend,
    triton_interpreting,
)
from .act_norms import sq_norms_reference
from .running_stat import (
    RunningSqNorms,
    num_samples,
    sample_sq_norms,
    update_running_sq_norms_torch,
)
from .wanda_mask import wanda_mask_reference, wanda_score, zero_pruned_

__all__ = [
    "accumulate_sq_norms",
    "linear_with_sq_norms",
    "RunningSqNorms",
    "update_running_sq_norms",
    "linear_with_running_sq_norms",
    "sample_sq_norms",
    "wanda_mask",
    "wanda_prune_",
    "wanda_mask_reference",
    "wanda_score",
    "zero_pruned_",
    "sq_norms_reference",
    "KernelInputError",
    "HAS_TRITON",
    "triton_interpreting",
]


def _check_stat_target(sq_norms: torch.Tensor, in_features: int) -> None:
    check_sq_norms(sq_norms, in_features)
    if sq_norms.dtype != torch.float32:
        raise KernelInputError(
            f"sq_norms has dtype {sq_norms.dtype}; the statistic is accumulated in place in fp32 - "
            "create it with torch.zeros(in_features, dtype=torch.float32)"
        )


def _check_x(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise KernelInputError("x must be a tensor of shape [..., in_features]")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise KernelInputError(f"x has dtype {x.dtype}; use float32, float16 or bfloat16")


def accumulate_sq_norms(
    x: torch.Tensor,
    sq_norms: torch.Tensor,
    token_mask: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """sq_norms[j] += sum over tokens of x[..., j]**2 (fp32), skipping tokens where token_mask is
    False (padding). In place; returns sq_norms."""
    _check_x(x)
    _check_stat_target(sq_norms, x.shape[-1])
    check_token_mask(token_mask, tuple(x.shape[:-1]))
    check_same_device(x=x, sq_norms=sq_norms, token_mask=token_mask)
    be = resolve_backend(backend, x, sq_norms)
    _ops.accumulate_sq_norms(x, sq_norms, token_mask, be)
    return sq_norms


def linear_with_sq_norms(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    sq_norms: Optional[torch.Tensor] = None,
    token_mask: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """y = F.linear(x, weight, bias); if sq_norms is given, also accumulate the statistic of x
    (as accumulate_sq_norms) from the same read of x (Triton backend)."""
    _check_x(x)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise KernelInputError("weight must be a 2-D [out_features, in_features] tensor")
    if x.shape[-1] != weight.shape[1]:
        raise KernelInputError(
            f"x has {x.shape[-1]} input features but weight has shape {tuple(weight.shape)}; "
            "the last dim of x must equal weight.shape[1]"
        )
    if x.dtype != weight.dtype:
        raise KernelInputError(
            f"x dtype {x.dtype} != weight dtype {weight.dtype}; cast x to the weight dtype"
        )
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0]):
        raise KernelInputError(
            f"bias has shape {tuple(bias.shape)}, expected ({weight.shape[0]},) = out_features"
        )
    if sq_norms is not None:
        _check_stat_target(sq_norms, weight.shape[1])
    if token_mask is not None:
        if sq_norms is None:
            raise KernelInputError("token_mask only affects the statistic; pass sq_norms too or drop it")
        check_token_mask(token_mask, tuple(x.shape[:-1]))
    check_same_device(x=x, weight=weight, bias=bias, sq_norms=sq_norms, token_mask=token_mask)
    be = resolve_backend(backend, x, weight)
    if be == "torch" and sq_norms is None:
        return F.linear(x, weight, bias)
    return _ops.linear_with_sq_norms(x, weight, bias, sq_norms, token_mask, be)


def wanda_mask(
    weight: torch.Tensor,
    sq_norms: Optional[torch.Tensor],
    sparsity: float = 0.5,
    *,
    n: Optional[int] = None,
    m: Optional[int] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Bool [out, in] mask, True = pruned, ranking score = |W| * sqrt(sq_norms) per output row.

    Unstructured: per row exactly int(in * sparsity) smallest scores, ties to the lower column
    index (identical to a stable ascending sort). N:M (give n and m): per row the n smallest of
    each group of m consecutive columns, same tie rule; sparsity is then ignored.
    sq_norms=None means all ones (magnitude ranking per row). Non-finite inputs raise ValueError.
    """
    mode, a, b = check_mask_args(weight, sq_norms, sparsity, n, m)
    be = resolve_backend(backend, weight, sq_norms)
    return _ops.wanda_mask(weight, sq_norms, a, b if mode == "nm" else 0, be)


def wanda_prune_(
    weight: torch.Tensor,
    sq_norms: Optional[torch.Tensor],
    sparsity: float = 0.5,
    *,
    n: Optional[int] = None,
    m: Optional[int] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """As wanda_mask, and zero the pruned entries of `weight` in place. Returns the mask.

    Torch backend: on ValueError the weight is untouched. Triton backend (one fused launch): on a
    non-finite *weight* the rows holding NaN/inf are untouched but other rows may already be pruned.
    """
    mode, a, b = check_mask_args(weight, sq_norms, sparsity, n, m)
    be = resolve_backend(backend, weight, sq_norms)
    return _ops.wanda_prune_(weight, sq_norms, a, b if mode == "nm" else 0, be)


def _check_running_stat(stat: RunningSqNorms, x: torch.Tensor) -> None:
    if not isinstance(stat, RunningSqNorms):
        raise KernelInputError(f"stat must be a kernels.RunningSqNorms, not {type(stat).__name__}")
    check_sq_norms(stat.mean_sq, x.shape[-1], name="stat.mean_sq")


def update_running_sq_norms(
    stat: RunningSqNorms,
    x: torch.Tensor,
    token_mask: Optional[torch.Tensor] = None,
    backend: str = "auto",
    *,
    per_sample: bool = True,
) -> RunningSqNorms:
    """Fold the samples of x ([samples, tokens, in]; 2-D = one sample) into the reference's running
    mean of per-sample ||x_j||² (see kernels/running_stat.py), padding tokens excluded.

    per_sample (torch backend only): True folds the samples one at a time with the reference's
    norm, bit-identical to a batch-1 run; False folds the batch's sum of squares once, as the Triton
    backend always does (the same statistic up to rounding, and several times faster on CPU)."""
    _check_x(x)
    _check_running_stat(stat, x)
    check_token_mask(token_mask, tuple(x.shape[:-1]))
    check_same_device(x=x, sq_norms=stat.mean_sq, token_mask=token_mask)
    be = resolve_backend(backend, x, stat.mean_sq)
    if be == "torch" and per_sample:
        update_running_sq_norms_torch(stat, x, token_mask)
    else:
        batch_sum = torch.zeros_like(stat.mean_sq)
        _ops.accumulate_sq_norms(x, batch_sum, token_mask, be)
        stat.fold(batch_sum, num_samples(x))
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
    if resolve_backend(backend, x, weight) == "torch":
        y = linear_with_sq_norms(x, weight, bias, backend="torch")  # validates x, weight, bias
        update_running_sq_norms(stat, x, token_mask, backend="torch")
        return y
    _check_running_stat(stat, x)
    batch_sum = torch.zeros_like(stat.mean_sq)
    y = linear_with_sq_norms(x, weight, bias, sq_norms=batch_sum, token_mask=token_mask, backend="triton")
    stat.fold(batch_sum, num_samples(x))
    return y
