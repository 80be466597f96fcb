"""Wanda kernels: activation statistics and per-row pruning masks, with Triton and torch backends.

One file per op, each in reading order (argument checks, Triton kernels, launcher, torch path,
oracle, custom-op registration, public functions):

    sq_norms.py          accumulate_sq_norms, linear_with_sq_norms, sq_norms_reference
    running_sq_norms.py  RunningSqNorms, update_running_sq_norms, linear_with_running_sq_norms,
                         sample_sq_norms (the reference's running mean of the statistic)
    wanda_mask.py        wanda_mask, wanda_prune_, wanda_score, zero_pruned_, wanda_mask_reference
    common.py            backend resolution, KernelInputError, HAS_TRITON, shared argument checks

backend: "auto" = Triton for CUDA tensors when triton imports, torch otherwise; "triton" forces
Triton (CPU tensors need TRITON_INTERPRET=1 set before import); "torch" forces torch. The public
functions validate their arguments (KernelInputError, a ValueError, with a one-line message) and
resolve the backend once. Masks: True = pruned. This file only re-exports.
"""

from .common import HAS_TRITON, KernelInputError, triton_interpreting
from .running_sq_norms import (
    RunningSqNorms,
    linear_with_running_sq_norms,
    sample_sq_norms,
    update_running_sq_norms,
)
from .sq_norms import accumulate_sq_norms, linear_with_sq_norms, sq_norms_reference
from .wanda_mask import wanda_mask, wanda_mask_reference, wanda_prune_, wanda_score, zero_pruned_

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
