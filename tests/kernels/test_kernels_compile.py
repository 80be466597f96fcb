"""Ahead-of-time compile of every Triton kernel for sm_90 (H100/H200), no GPU needed.

The CPU interpreter does not run Triton's compiler, so without this a kernel could pass every
interpreted test and still fail to compile on a GPU.
"""

import os
import subprocess
import sys

import pytest

from kernels import HAS_TRITON

pytestmark = pytest.mark.slow  # a full compile of every kernel

HERE = os.path.dirname(os.path.abspath(__file__))


def _has_ptxas() -> bool:
    if not HAS_TRITON:
        return False
    import triton

    return os.path.exists(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas"))


@pytest.mark.skipif(not _has_ptxas(), reason="needs triton with its NVIDIA backend (ptxas)")
def test_kernels_compile_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "_compile_check.py"), "--arch", "90"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    lines = [l for l in proc.stdout.splitlines() if l.startswith("ok ")]
    assert len(lines) >= 10
    for line in lines:  # the mask kernels' default configurations must not spill to the stack
        if "_wanda_mask_rows_kernel" in line and "STACK:" in line:
            assert "STACK:0" in line, line
