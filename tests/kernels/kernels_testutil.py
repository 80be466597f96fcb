"""Shared helpers for the kernels tests (a uniquely named module: tests/ has its own conftest).

Triton tests run on CUDA, or on CPU when TRITON_INTERPRET=1 was set before `kernels` was imported
(run: TRITON_INTERPRET=1 python -m pytest -q tests/kernels). Otherwise they are skipped.
"""

import pytest
import torch

from kernels import HAS_TRITON

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _triton_runnable() -> bool:
    if not HAS_TRITON:
        return False
    if DEVICE == "cuda":
        return True
    from kernels.wanda_mask import _wanda_mask_rows_kernel

    # The kernels were decorated at import time; only interpreted ones can run on CPU.
    return type(_wanda_mask_rows_kernel).__name__ == "InterpretedFunction"


TRITON_OK = _triton_runnable()
SKIP_NO_TRITON = pytest.mark.skipif(
    not TRITON_OK, reason="needs triton and CUDA, or TRITON_INTERPRET=1 set before import"
)
