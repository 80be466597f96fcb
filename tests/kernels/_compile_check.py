"""Compile every Triton kernel ahead of time for NVIDIA targets, without a GPU.

Triton's front end + ptxas (shipped in the triton wheel) run on any machine, so this catches code
generation errors (constexpr misuse, type mismatches in loop-carried values, layout problems) that
the CPU interpreter never sees. Prints register / stack use per variant. Must run with
TRITON_INTERPRET unset (interpreted kernels cannot be compiled). Usage:
    python tests/kernels/_compile_check.py [--arch 90]
"""

import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from kernels.sq_norms import _linear_sq_kernel, _sq_norms_kernel  # noqa: E402
from kernels.wanda_mask import _wanda_mask_nm_kernel, _wanda_mask_rows_kernel  # noqa: E402

ROWS_SIG = {"W": None, "S": "*fp32", "MASK": "*i8", "FLAGS": "*i8", "stride_wr": "i32", "stride_mr": "i32",
            "n_cols": "i32", "K": "i32", "num_tiles": "i32"}
NM_SIG = {"W": None, "S": "*fp32", "MASK": "*i8", "FLAGS": "*i8", "stride_wr": "i32", "stride_mr": "i32",
          "n_groups": "i32"}
SQ_SIG = {"X": None, "TM": "*u8", "OUT": "*fp32", "n_tok": "i32", "n_cols": "i32", "stride_xt": "i32",
          "stride_out_split": "i32", "stride_out_col": "i32", "rows_per_split": "i32"}
LIN_SIG = {"X": None, "Wt": None, "B": None, "Y": None, "TM": "*u8", "P": "*fp32", "M": "i32", "N": "i32",
           "K": "i32", "stride_xm": "i32", "stride_xk": "i32", "stride_wn": "i32", "stride_wk": "i32",
           "stride_ym": "i32", "stride_yn": "i32"}


def variants():
    for dt, nt, has_s in [("*fp16", 1, True), ("*bf16", 4, True), ("*fp32", 3, False)]:
        yield _wanda_mask_rows_kernel, ROWS_SIG, dt, dict(
            HAS_S=has_s, WRITE_W=True, BLOCK=2048, SINGLE_TILE=nt == 1, RADIX=4, NUM_PASSES=8), dict(num_warps=8)
    yield _wanda_mask_rows_kernel, ROWS_SIG, "*fp16", dict(
        HAS_S=True, WRITE_W=False, BLOCK=4096, SINGLE_TILE=True, RADIX=2, NUM_PASSES=16), dict(num_warps=16)
    for n, m, bg in [(2, 4, 256), (4, 8, 64)]:
        yield _wanda_mask_nm_kernel, NM_SIG, "*bf16", dict(
            N=n, M=m, MP=m, BLOCK_G=bg, HAS_S=True, WRITE_W=True), dict(num_warps=4)
    yield _sq_norms_kernel, SQ_SIG, "*fp16", dict(
        HAS_MASK=True, ACCUMULATE=False, BLOCK_T=32, BLOCK_C=128), dict(num_warps=4)
    yield _sq_norms_kernel, SQ_SIG, "*fp32", dict(
        HAS_MASK=False, ACCUMULATE=True, BLOCK_T=32, BLOCK_C=128), dict(num_warps=4)
    for dt, ieee in [("*fp16", False), ("*bf16", False), ("*fp32", True)]:
        yield _linear_sq_kernel, LIN_SIG, dt, dict(
            HAS_BIAS=True, HAS_STAT=True, HAS_MASK=True, IEEE=ieee, DOT_UPCAST=False,
            BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, GROUP_M=8), dict(num_warps=4, num_stages=3)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", type=int, default=90)
    args = ap.parse_args()
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("unset TRITON_INTERPRET to compile", file=sys.stderr)
        return 2
    target = GPUTarget("cuda", args.arch, 32)
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    for fn, sig, dt, consts, opts in variants():
        signature = {k: (dt if v is None else v) for k, v in sig.items()}
        signature.update({k: "constexpr" for k in consts})
        kernel = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=consts),
                                target=target, options=opts)
        usage = ""
        if os.path.exists(cuobjdump):
            with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
                f.write(kernel.asm["cubin"])
                f.flush()
                out = subprocess.run([cuobjdump, "--dump-resource-usage", f.name],
                                     capture_output=True, text=True).stdout
            usage = " ".join(w for line in out.splitlines() if "REG" in line
                             for w in line.split() if w.startswith(("REG", "STACK")))
        print(f"ok sm_{args.arch} {fn.__name__} {dt} {consts} {opts} {usage}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
