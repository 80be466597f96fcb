"""What the kernel ops share: whether Triton can run, backend resolution, the error they raise, the
argument checks more than one op makes, and the namespace of their torch.library custom ops.

Knows nothing about models: only tensors, shapes and numbers.
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
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Every op registers as `wanda_kernels::<public name>`. Public functions call the custom op only while
# torch.compile traces them (one opaque node: no graph break, no tracing into Triton launches or host
# syncs); eager calls run the op's implementation directly, since the op wrapper only adds cost there.
OP_NAMESPACE = "wanda_kernels"


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
    """Map "auto" / "triton" / "torch" to the backend that will actually run ("triton" or "torch")."""
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


def check_activations(x: torch.Tensor) -> None:
    """x of shape [..., in_features] in a float dtype the kernels read."""
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise KernelInputError("x must be a tensor of shape [..., in_features]")
    if x.dtype not in FLOAT_DTYPES:
        raise KernelInputError(f"x has dtype {x.dtype}; use float32, float16 or bfloat16")


def check_sq_norms(sq_norms: torch.Tensor, in_features: int, name: str = "sq_norms") -> None:
    """Shape checks for a statistic vector (values are checked where they are read)."""
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
