"""The Wanda statistic: per input column, the sum of squares of the activations, optionally fused
into the linear layer's GEMM so x is read once.

  sq_norms[j] += sum over (unmasked) tokens t of x[t, j]**2       (fp32 accumulation)

    accumulate_sq_norms(x, sq_norms, token_mask=None, backend="auto") -> sq_norms
    linear_with_sq_norms(x, weight, bias=None, sq_norms=None, token_mask=None, backend="auto") -> y
    sq_norms_reference(x, token_mask=None) -> fp64 oracle

The Triton paths are deterministic (no float atomics): per-split partial sums are written to a
small buffer and reduced in a fixed order, so the statistic (and hence the mask) is reproducible
run to run.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .common import (
    HAS_TRITON,
    OP_NAMESPACE,
    KernelInputError,
    check_activations,
    check_same_device,
    check_sq_norms,
    check_token_mask,
    resolve_backend,
    triton_interpreting,
)

# --------------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------------


def _check_accumulator(sq_norms: torch.Tensor, in_features: int) -> None:
    check_sq_norms(sq_norms, in_features)
    if sq_norms.dtype != torch.float32:
        raise KernelInputError(
            f"sq_norms has dtype {sq_norms.dtype}; the statistic is accumulated in place in fp32 - "
            "create it with torch.zeros(in_features, dtype=torch.float32)"
        )


def _check_accumulate_args(x: torch.Tensor, sq_norms: torch.Tensor, token_mask: Optional[torch.Tensor]) -> None:
    check_activations(x)
    _check_accumulator(sq_norms, x.shape[-1])
    check_token_mask(token_mask, tuple(x.shape[:-1]))
    check_same_device(x=x, sq_norms=sq_norms, token_mask=token_mask)


def _check_linear_args(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    sq_norms: Optional[torch.Tensor],
    token_mask: Optional[torch.Tensor],
) -> None:
    check_activations(x)
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
        _check_accumulator(sq_norms, weight.shape[1])
    if token_mask is not None:
        if sq_norms is None:
            raise KernelInputError("token_mask only affects the statistic; pass sq_norms too or drop it")
        check_token_mask(token_mask, tuple(x.shape[:-1]))
    check_same_device(x=x, weight=weight, bias=bias, sq_norms=sq_norms, token_mask=token_mask)


# --------------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------------

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _sq_norms_kernel(
        X,
        TM,
        OUT,
        n_tok,
        n_cols,
        stride_xt,
        stride_out_split,
        stride_out_col,
        rows_per_split,
        HAS_MASK: tl.constexpr,
        ACCUMULATE: tl.constexpr,
        BLOCK_T: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        """Program (column block, token split): fp32 sum of x**2 over its tokens.

        ACCUMULATE: add into OUT (the statistic itself, only when there is a single split);
        otherwise store the partial sum to row `split` of OUT (a [splits, cols] buffer)."""
        pid_c = tl.program_id(0)
        pid_s = tl.program_id(1)
        cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cols < n_cols
        t_start = pid_s * rows_per_split
        t_end = tl.minimum(t_start + rows_per_split, n_tok)
        acc = tl.zeros([BLOCK_T, BLOCK_C], dtype=tl.float32)
        for t0 in range(t_start, t_end, BLOCK_T):
            rows = t0 + tl.arange(0, BLOCK_T)
            rmask = rows < t_end
            if HAS_MASK:
                keep = tl.load(TM + rows, mask=rmask, other=0)
                rmask = rmask & (keep != 0)
            ptrs = X + rows.to(tl.int64)[:, None] * stride_xt + cols[None, :]
            x = tl.load(ptrs, mask=rmask[:, None] & cmask[None, :], other=0.0).to(tl.float32)
            acc += x * x
        part = tl.sum(acc, axis=0)
        out_ptrs = OUT + pid_s * stride_out_split + cols * stride_out_col
        if ACCUMULATE:
            prev = tl.load(out_ptrs, mask=cmask, other=0.0)
            tl.store(out_ptrs, prev + part, mask=cmask)
        else:
            tl.store(out_ptrs, part, mask=cmask)

    @triton.jit
    def _linear_sq_kernel(
        X,
        Wt,
        B,
        Y,
        TM,
        P,
        M,
        N,
        K,
        stride_xm,
        stride_xk,
        stride_wn,
        stride_wk,
        stride_ym,
        stride_yn,
        HAS_BIAS: tl.constexpr,
        HAS_STAT: tl.constexpr,
        HAS_MASK: tl.constexpr,
        IEEE: tl.constexpr,
        DOT_UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        GROUP_M: tl.constexpr,
    ):
        """y = x @ W^T (+ b), and -- only in the programs of the first N-column block, so each x
        element is counted once -- the per-column sum of x**2 over this M block, stored to row
        pid_m of the partial buffer P [cdiv(M, BLOCK_M), K] (reduced on the host side in order)."""
        pid = tl.program_id(0)
        num_pid_m = tl.cdiv(M, BLOCK_M)
        num_pid_n = tl.cdiv(N, BLOCK_N)
        # Grouped launch order: neighbouring programs share x / W tiles in L2.
        num_in_group = GROUP_M * num_pid_n
        group_id = pid // num_in_group
        first_m = group_id * GROUP_M
        group_size = tl.minimum(num_pid_m - first_m, GROUP_M)
        pid_m = first_m + ((pid % num_in_group) % group_size)
        pid_n = (pid % num_in_group) // group_size

        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        m_ok = rm < M
        n_ok = rn < N
        if HAS_STAT and HAS_MASK:
            tok = tl.load(TM + rm, mask=m_ok, other=0) != 0
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        x_ptrs = X + rm.to(tl.int64)[:, None] * stride_xm + rk[None, :] * stride_xk
        w_ptrs = Wt + rn.to(tl.int64)[:, None] * stride_wn + rk[None, :] * stride_wk
        for k0 in range(0, K, BLOCK_K):
            k_ok = (k0 + rk) < K
            x = tl.load(x_ptrs, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            w = tl.load(w_ptrs, mask=n_ok[:, None] & k_ok[None, :], other=0.0)
            if DOT_UPCAST:
                # Interpreter only: its tl.dot multiplies bf16 bit patterns as integers, so feed it
                # fp32 copies (exact for bf16, same fp32 accumulation). Never set on a GPU.
                acc = tl.dot(x.to(tl.float32), tl.trans(w.to(tl.float32)), acc, input_precision="ieee")
            elif IEEE:
                acc = tl.dot(x, tl.trans(w), acc, input_precision="ieee")
            else:
                acc = tl.dot(x, tl.trans(w), acc)
            if HAS_STAT:
                if pid_n == 0:
                    xf = x.to(tl.float32)
                    if HAS_MASK:
                        xf = tl.where(tok[:, None], xf, 0.0)
                    tl.store(P + pid_m * K + k0 + rk, tl.sum(xf * xf, axis=0), mask=k_ok)
            x_ptrs += BLOCK_K * stride_xk
            w_ptrs += BLOCK_K * stride_wk
        if HAS_BIAS:
            acc += tl.load(B + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        y_ptrs = Y + rm.to(tl.int64)[:, None] * stride_ym + rn[None, :] * stride_yn
        tl.store(y_ptrs, acc.to(Y.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])

    _LINEAR_CONFIGS = [
        triton.Config({"BLOCK_N": 128, "BLOCK_K": 64}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_N": 64, "BLOCK_K": 64}, num_warps=4, num_stages=4),
        triton.Config({"BLOCK_N": 128, "BLOCK_K": 32}, num_warps=8, num_stages=4),
        triton.Config({"BLOCK_N": 256, "BLOCK_K": 64}, num_warps=8, num_stages=3),
    ]
    # Autotuned variant for real GPUs (re-running is safe: the kernel only overwrites Y and P).
    _linear_sq_kernel_tuned = triton.autotune(configs=_LINEAR_CONFIGS, key=["N", "K", "BLOCK_M"])(
        _linear_sq_kernel
    )


# --------------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------------


def accumulate_sq_norms_triton(
    x: torch.Tensor,
    sq_norms: torch.Tensor,
    token_mask: Optional[torch.Tensor] = None,
    block_t: int = 32,
    block_c: int = 128,
    max_splits: Optional[int] = None,
) -> torch.Tensor:
    n_cols = x.shape[-1]
    x2 = x.reshape(-1, n_cols)
    if x2.stride(1) != 1:
        x2 = x2.contiguous()
    n_tok = x2.shape[0]
    if n_tok == 0 or n_cols == 0:
        return sq_norms
    tm = None
    if token_mask is not None:
        tm = token_mask.reshape(-1).contiguous().view(torch.uint8)
    col_blocks = triton.cdiv(n_cols, block_c)
    if max_splits is None:
        # Enough programs to fill the GPU (~4 per SM); the interpreter runs them serially.
        if x.is_cuda:
            sms = torch.cuda.get_device_properties(x.device).multi_processor_count
            max_splits = max(1, (4 * sms) // col_blocks)
        else:
            max_splits = 4
    splits = max(1, min(max_splits, triton.cdiv(n_tok, block_t)))
    rows_per_split = triton.cdiv(triton.cdiv(n_tok, splits), block_t) * block_t
    splits = triton.cdiv(n_tok, rows_per_split)
    tm_arg = tm if tm is not None else x2
    if splits == 1:
        _sq_norms_kernel[(col_blocks, 1)](
            x2, tm_arg, sq_norms, n_tok, n_cols, x2.stride(0), 0, sq_norms.stride(0), rows_per_split,
            HAS_MASK=tm is not None, ACCUMULATE=True, BLOCK_T=block_t, BLOCK_C=block_c,
        )
    else:
        part = torch.empty((splits, n_cols), dtype=torch.float32, device=x.device)
        _sq_norms_kernel[(col_blocks, splits)](
            x2, tm_arg, part, n_tok, n_cols, x2.stride(0), part.stride(0), 1, rows_per_split,
            HAS_MASK=tm is not None, ACCUMULATE=False, BLOCK_T=block_t, BLOCK_C=block_c,
        )
        sq_norms.add_(part.sum(dim=0))  # fixed-order reduction: deterministic
    return sq_norms


def linear_with_sq_norms_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    sq_norms: Optional[torch.Tensor],
    token_mask: Optional[torch.Tensor],
    block_m: Optional[int] = None,
    config: Optional[dict] = None,
) -> torch.Tensor:
    """Triton GEMM + fused statistic. `config` (BLOCK_N, BLOCK_K, num_warps, num_stages) skips
    autotuning; under the interpreter a small fixed config is always used."""
    n_out, k_in = weight.shape
    lead = x.shape[:-1]
    x2 = x.reshape(-1, k_in)
    m_tok = x2.shape[0]
    y = torch.empty((m_tok, n_out), dtype=x.dtype, device=x.device)
    if m_tok == 0 or n_out == 0:
        return y.reshape(*lead, n_out)
    if k_in == 0:
        y.zero_()
        if bias is not None:
            y += bias
        return y.reshape(*lead, n_out)
    if block_m is None:
        block_m = 128 if m_tok >= 512 else (64 if m_tok > 32 else 32)
    has_stat = sq_norms is not None
    tm = token_mask.reshape(-1).contiguous().view(torch.uint8) if token_mask is not None else None
    num_pm = triton.cdiv(m_tok, block_m)
    part = torch.empty((num_pm, k_in), dtype=torch.float32, device=x.device) if has_stat else y
    ieee = x.dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest"
    args = (
        x2, weight, bias.contiguous() if bias is not None else y, y, tm if tm is not None else y, part,
        m_tok, n_out, k_in,
        x2.stride(0), x2.stride(1), weight.stride(0), weight.stride(1), y.stride(0), y.stride(1),
    )
    flags = dict(
        HAS_BIAS=bias is not None, HAS_STAT=has_stat, HAS_MASK=tm is not None, IEEE=ieee,
        DOT_UPCAST=triton_interpreting() and x.dtype == torch.bfloat16, BLOCK_M=block_m, GROUP_M=8,
    )
    if triton_interpreting() or config is not None:
        cfg = config or {"BLOCK_N": 32, "BLOCK_K": 32, "num_warps": 4, "num_stages": 1}
        bn, bk = cfg["BLOCK_N"], cfg["BLOCK_K"]
        grid = (num_pm * triton.cdiv(n_out, bn),)
        _linear_sq_kernel[grid](
            *args, **flags, BLOCK_N=bn, BLOCK_K=bk,
            num_warps=cfg.get("num_warps", 4), num_stages=cfg.get("num_stages", 3),
        )
    else:
        grid = lambda meta: (num_pm * triton.cdiv(n_out, meta["BLOCK_N"]),)  # noqa: E731
        _linear_sq_kernel_tuned[grid](*args, **flags)
    if has_stat:
        sq_norms.add_(part.sum(dim=0))
    return y.reshape(*lead, n_out)


# --------------------------------------------------------------------------------------------------
# Torch path
# --------------------------------------------------------------------------------------------------

_SQUARES_CHUNK = 1 << 18  # elements (1 MiB of fp32 squares)


def accumulate_sq_norms_torch(
    x: torch.Tensor, sq_norms: torch.Tensor, token_mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    x2 = x.reshape(-1, x.shape[-1])
    if token_mask is not None:
        x2 = x2[token_mask.reshape(-1)]  # drop padding tokens before squaring
    # square().sum(0) is a vectorised, multithreaded cascade sum, much faster on CPU than the
    # equivalent einsum("tj,tj->j") and no less accurate. Its squares are a temporary as large as x,
    # so rows go in chunks of at most _SQUARES_CHUNK elements: a pruning run calls this while its
    # peak memory is held.
    rows_per_chunk = max(1, _SQUARES_CHUNK // max(1, x2.shape[1]))
    for start in range(0, x2.shape[0], rows_per_chunk):
        sq_norms.add_(x2[start : start + rows_per_chunk].float().square().sum(dim=0))
    return sq_norms


def linear_with_sq_norms_torch(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    sq_norms: Optional[torch.Tensor],
    token_mask: Optional[torch.Tensor],
) -> torch.Tensor:
    if sq_norms is not None:
        accumulate_sq_norms_torch(x, sq_norms, token_mask)
    return F.linear(x, weight, bias)


# --------------------------------------------------------------------------------------------------
# Oracle
# --------------------------------------------------------------------------------------------------


def sq_norms_reference(x: torch.Tensor, token_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """fp64 oracle of sum over tokens of x**2, shape [in]."""
    x2 = x.reshape(-1, x.shape[-1]).double()
    if token_mask is not None:
        x2 = x2[token_mask.reshape(-1)]
    return (x2 * x2).sum(dim=0)


# --------------------------------------------------------------------------------------------------
# Custom ops (for torch.compile; see OP_NAMESPACE) and the public functions
# --------------------------------------------------------------------------------------------------


def _accumulate_sq_norms_impl(
    x: torch.Tensor, sq_norms: torch.Tensor, token_mask: Optional[torch.Tensor], backend: str
) -> None:
    if backend == "triton":
        accumulate_sq_norms_triton(x, sq_norms, token_mask)
    else:
        accumulate_sq_norms_torch(x, sq_norms, token_mask)


def _linear_with_sq_norms_impl(
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


_accumulate_sq_norms_op = torch.library.custom_op(
    f"{OP_NAMESPACE}::accumulate_sq_norms", _accumulate_sq_norms_impl, mutates_args=("sq_norms",)
)
_linear_with_sq_norms_op = torch.library.custom_op(
    f"{OP_NAMESPACE}::linear_with_sq_norms", _linear_with_sq_norms_impl, mutates_args=("sq_norms",)
)


@_accumulate_sq_norms_op.register_fake
def _(x, sq_norms, token_mask, backend):
    return None


@_linear_with_sq_norms_op.register_fake
def _(x, weight, bias, sq_norms, token_mask, backend):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def accumulate_sq_norms(
    x: torch.Tensor,
    sq_norms: torch.Tensor,
    token_mask: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """sq_norms[j] += sum over tokens of x[..., j]**2 (fp32), skipping tokens where token_mask is
    False (padding). In place; returns sq_norms."""
    _check_accumulate_args(x, sq_norms, token_mask)
    be = resolve_backend(backend, x, sq_norms)
    run = _accumulate_sq_norms_op if torch.compiler.is_compiling() else _accumulate_sq_norms_impl
    run(x, sq_norms, token_mask, be)
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
    _check_linear_args(x, weight, bias, sq_norms, token_mask)
    be = resolve_backend(backend, x, weight)
    if be == "torch" and sq_norms is None:
        return F.linear(x, weight, bias)
    run = _linear_with_sq_norms_op if torch.compiler.is_compiling() else _linear_with_sq_norms_impl
    return run(x, weight, bias, sq_norms, token_mask, be)
