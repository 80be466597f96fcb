"""Shared helpers: backend resolution and argument validation.

Kept free of any model knowledge: only tensors, shapes and numbers.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import torch

try:  # Triton is optional: the torch backend must work without it.
    import triton  # noqa: F401
    import triton.language as tl  # noqa: F401

    HAS_TRITON = True
    TRITON_IMPORT_ERROR: Optional[str] = None
except Exception as exc:  # pragma: no cover - depends on the environment
    HAS_TRITON = False
    TRITON_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

BACKENDS = ("auto", "triton", "torch")


class KernelInputError(ValueError):
    """A kernel refused its arguments (shape, dtype, device, N:M pattern, non-finite values). A
    ValueError, so callers that catch ValueError keep working; pipelines catch this class to tell bad
    input from their own bugs."""


# Triton reads TRITON_INTERPRET when a kernel is *decorated*, i.e. when this package is imported;
# freeze the value seen then, so a later change of the variable cannot desynchronise the checks.
_INTERPRET_AT_IMPORT = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0", "false", "False")


def triton_interpreting() -> bool:
    """True when the Triton kernels run in the CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return HAS_TRITON and _INTERPRET_AT_IMPORT


def resolve_backend(backend: str, *tensors: Optional[torch.Tensor]) -> str:
    """Map "auto" / "triton" / "torch" to the backend that will actually run."""
    if backend not in BACKENDS:
        raise KernelInputError(f"backend={backend!r} is not supported; use one of 'auto', 'triton', 'torch'")
    on_cuda = any(t is not None and t.is_cuda for t in tensors)
    if backend == "torch":
        return "torch"
    if backend == "auto":
        return "triton" if (on_cuda and HAS_TRITON) else "torch"
    # Forced Triton.
    if not HAS_TRITON:
        raise KernelInputError(
            f"backend='triton' but triton cannot be imported ({TRITON_IMPORT_ERROR}); "
            "install triton or use backend='torch'"
        )
    if not on_cuda and not triton_interpreting():
        raise KernelInputError(
            "backend='triton' with CPU tensors needs the Triton interpreter; set TRITON_INTERPRET=1 "
            "before importing kernels, move the tensors to CUDA, or use backend='torch'"
        )
    return "triton"


def check_same_device(**tensors: Optional[torch.Tensor]) -> None:
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        desc = ", ".join(f"{k} on {v}" for k, v in devices.items())
        raise KernelInputError(f"tensors must be on one device, got {desc}; move them with .to(device)")


FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_sq_norms(sq_norms: torch.Tensor, in_features: int, name: str = "sq_norms") -> None:
    """Shape/dtype checks for a statistic vector (values are checked where they are read)."""
    if not isinstance(sq_norms, torch.Tensor):
        raise KernelInputError(f"{name} must be a torch.Tensor, got {type(sq_norms).__name__}")
    if sq_norms.dim() != 1 or sq_norms.shape[0] != in_features:
        raise KernelInputError(
            f"{name} has shape {tuple(sq_norms.shape)}, expected ({in_features},) to match the "
            "input features; pass one fp32 value per input column"
        )


def check_token_mask(token_mask: Optional[torch.Tensor], lead_shape: Tuple[int, ...]) -> None:
    if token_mask is None:
        return
    if token_mask.dtype != torch.bool:
        raise KernelInputError(
            f"token_mask has dtype {token_mask.dtype}, expected torch.bool (True = count this token); "
            "convert with mask.bool()"
        )
    if tuple(token_mask.shape) != tuple(lead_shape):
        raise KernelInputError(
            f"token_mask has shape {tuple(token_mask.shape)}, expected {tuple(lead_shape)} "
            "(the leading dims of x)"
        )


def check_mask_args(
    weight: torch.Tensor,
    sq_norms: Optional[torch.Tensor],
    sparsity: float,
    n: Optional[int],
    m: Optional[int],
) -> Tuple[str, int, int]:
    """Validate wanda_mask arguments. Returns (mode, a, b): ("unstructured", k, 0) or ("nm", n, m)."""
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise KernelInputError(f"weight must be a 2-D [out, in] tensor, got {shape}")
    if weight.dtype not in FLOAT_DTYPES:
        raise KernelInputError(
            f"weight dtype {weight.dtype} is not supported; use float32, float16 or bfloat16"
        )
    out_f, in_f = weight.shape
    if sq_norms is not None:
        check_sq_norms(sq_norms, in_f)
        check_same_device(weight=weight, sq_norms=sq_norms)
        if sq_norms.dtype not in FLOAT_DTYPES and sq_norms.dtype != torch.float64:
            raise KernelInputError(f"sq_norms dtype {sq_norms.dtype} is not a float type; use float32")
    if (n is None) != (m is None):
        raise KernelInputError(f"n={n} and m={m}: give both (N:M pruning) or neither (unstructured)")
    if n is not None:
        if isinstance(n, bool) or isinstance(m, bool) or not isinstance(n, int) or not isinstance(m, int):
            raise KernelInputError(f"n={n!r}, m={m!r} must be integers, e.g. n=2, m=4")
        if not (m >= 1 and 0 <= n < m):
            raise KernelInputError(f"n={n}, m={m} is not a valid N:M pattern; need 0 <= n < m (e.g. 2:4)")
        if in_f % m != 0:
            raise KernelInputError(
                f"in_features={in_f} is not divisible by m={m}; N:M needs whole groups of m columns"
            )
        return "nm", n, m
    try:
        sp = float(sparsity)
    except (TypeError, ValueError):
        raise KernelInputError(f"sparsity={sparsity!r} is not a number; use a float in [0, 1)") from None
    if not (0.0 <= sp < 1.0):  # also rejects NaN
        raise KernelInputError(f"sparsity={sparsity!r} is outside [0, 1); use e.g. 0.5 for 50%")
    return "unstructured", int(in_f * sp), 0


def raise_nonfinite(
    weight: torch.Tensor, sq_norms: Optional[torch.Tensor], partly_pruned: bool = False
) -> None:
    """Called once a kernel saw a non-finite score: find the cause and raise a one-line ValueError.

    Slow path only (runs after a failure), so it may scan everything.
    """
    suffix = " (weight may have been partly pruned in place)" if partly_pruned else ""
    if sq_norms is not None:
        s = sq_norms.float()
        bad = ~torch.isfinite(s)
        if bool(bad.any()):
            col = int(bad.nonzero()[0, 0])
            raise KernelInputError(
                f"sq_norms contains NaN or inf (first at column {col}){suffix}; a mask from "
                "non-finite statistics is meaningless - check the calibration forward (e.g. fp16 overflow)"
            )
        neg = s < 0
        if bool(neg.any()):
            col = int(neg.nonzero()[0, 0])
            raise KernelInputError(
                f"sq_norms[{col}] = {float(s[col])} is negative{suffix}; a sum of squares is >= 0 - "
                "check how the statistic was accumulated"
            )
    bad = ~torch.isfinite(weight)
    if bool(bad.any()):
        r, c = (int(v) for v in bad.nonzero()[0])
        raise KernelInputError(
            f"weight contains NaN or inf (first at [{r}, {c}]){suffix}; a mask from non-finite "
            "values is meaningless - check the model weights (e.g. fp16 overflow)"
        )
    raise KernelInputError(
        f"score |W| * sqrt(sq_norms) overflows fp32 to inf{suffix}; rescale the statistic "
        "(e.g. divide sq_norms by the token count, as the reference's running mean does)"
    )
