"""Wanda score + per-row selection + masking: Triton kernels, torch path, stable-sort oracle.

    wanda_mask(weight, sq_norms, sparsity=0.5, *, n=None, m=None, backend="auto") -> bool mask
    wanda_prune_(weight, sq_norms, sparsity=0.5, *, n=None, m=None, backend="auto") -> bool mask
    wanda_score(weight, sq_norms) -> fp32 score;  zero_pruned_(weight, mask) -> weight
    wanda_mask_reference(weight, sq_norms, sparsity=0.5, n=None, m=None) -> oracle mask

Semantics (those of the reference, locuslab/wanda):
  score = |W|.float() * sqrt(sq_norms.float())            (fp32, broadcast over output rows)
  unstructured: per output row exactly k = int(in * sparsity) lowest scores are pruned, ties to the
                lower column index (the reference's stable ascending sort, first k indices).
  N:M:          per row, the n lowest scores of each group of m consecutive input columns, ties to
                the lower column index.
  sq_norms=None ranks by |W| alone. The returned mask is bool [out, in] with True = pruned.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from .common import (
    FLOAT_DTYPES,
    HAS_TRITON,
    OP_NAMESPACE,
    KernelInputError,
    check_same_device,
    check_sq_norms,
    resolve_backend,
)

# --------------------------------------------------------------------------------------------------
# Argument checks and backend choice
# --------------------------------------------------------------------------------------------------

# The Triton row kernel runs one program per output row: a row this wide (e.g. a whole matrix
# flattened for a single threshold) would run on a single SM, so such calls take the torch path.
TRITON_MAX_ROW = 1 << 20


def _check_mask_args(
    weight: torch.Tensor,
    sq_norms: Optional[torch.Tensor],
    sparsity: float,
    n: Optional[int],
    m: Optional[int],
) -> Tuple[int, int]:
    """Validate wanda_mask arguments. Returns (k, 0) for unstructured, (n, m) for N:M."""
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise KernelInputError(f"weight must be a 2-D [out, in] tensor, got {shape}")
    if weight.dtype not in FLOAT_DTYPES:
        raise KernelInputError(
            f"weight dtype {weight.dtype} is not supported; use float32, float16 or bfloat16"
        )
    in_f = weight.shape[1]
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
        return n, m
    try:
        sp = float(sparsity)
    except (TypeError, ValueError):
        raise KernelInputError(f"sparsity={sparsity!r} is not a number; use a float in [0, 1)") from None
    if not (0.0 <= sp < 1.0):  # also rejects NaN
        raise KernelInputError(f"sparsity={sparsity!r} is outside [0, 1); use e.g. 0.5 for 50%")
    return int(in_f * sp), 0


def _raise_nonfinite(
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


def _mask_backend(backend: str, weight: torch.Tensor, sq_norms: Optional[torch.Tensor], m: int) -> str:
    """The backend a mask of `weight` runs on: resolve_backend's, except that unstructured rows wider
    than TRITON_MAX_ROW take the torch path."""
    resolved = resolve_backend(backend, weight, sq_norms)
    if resolved == "triton" and m == 0 and weight.shape[1] > TRITON_MAX_ROW:
        return "torch"
    return resolved


# --------------------------------------------------------------------------------------------------
# Score and zeroing (shared by both paths and the oracle)
# --------------------------------------------------------------------------------------------------


def wanda_score(weight: torch.Tensor, sq_norms: Optional[torch.Tensor]) -> torch.Tensor:
    """fp32 score matrix |W| * sqrt(s). `sq_norms=None` means all ones (pure magnitude)."""
    # abs is exact in any float dtype, so abs-then-upcast == upcast-then-abs; one new buffer.
    score = weight.abs() if weight.dtype == torch.float32 else weight.float().abs_()
    if sq_norms is None:
        return score
    return score.mul_(torch.sqrt(sq_norms.float()).unsqueeze(0))


# Same-width integer dtypes: zeroing a float by AND-ing its bits with 0 gives exactly +0.0.
_BITS_DTYPE = {8: torch.int64, 4: torch.int32, 2: torch.int16}


def zero_pruned_(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """weight[mask] = +0.0 in place, bit-identical to `weight.masked_fill_(mask, 0)`: an AND of the
    weight's bits with a keep mask (on CPU much faster than masked_fill_, which is single-threaded)."""
    bits_dtype = _BITS_DTYPE.get(weight.element_size())
    if bits_dtype is None or not weight.is_floating_point():
        return weight.masked_fill_(mask, 0)
    keep_bits = mask.to(bits_dtype).sub_(1)  # pruned → 0, kept → all bits set
    weight.view(bits_dtype).bitwise_and_(keep_bits)
    return weight


# --------------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------------

# Defaults for the GPU (benchmarks/gpu_check.sh sweeps them). RADIX_BITS digits are resolved per
# pass: ceil(31 / RADIX_BITS) passes over the row, each counting 2**RADIX_BITS - 1 candidate
# thresholds at once. Wider radixes spill registers on sm_90 (docs/kernels.md), so 4 is the cap.
MASK_BLOCK = 2048  # column tile of a row wider than MASK_SINGLE_TILE_MAX
MASK_SINGLE_TILE_MAX = 4096  # rows up to this width are held in registers for all passes
RADIX_BITS = 4
NM_PAIRWISE_ELEMS = 4096  # BLOCK_G * MP * MP for the N:M pairwise-rank tile

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _tile_bits(w_row, s_ptr, cols, n_cols, HAS_S: tl.constexpr):
        """Score bit patterns of one tile (+ a non-finite flag per element).

        Scores are >= 0, so their fp32 bit patterns as int32 sort exactly like the values. The sign
        bit is cleared so -0.0 (sqrt(-0.0)) and +0.0 compare equal, as in torch. Out-of-range
        columns get INT32_MAX, larger than any finite or infinite score, so they never count.
        """
        inb = cols < n_cols
        w = tl.load(w_row + cols, mask=inb, other=0.0)
        wa = tl.abs(w).to(tl.float32)
        if HAS_S:
            s = tl.load(s_ptr + cols, mask=inb, other=1.0).to(tl.float32)
            score = wa * tl.sqrt_rn(s)  # IEEE sqrt, bit-identical to torch.sqrt
        else:
            score = wa
        bits = score.to(tl.int32, bitcast=True) & 0x7FFFFFFF
        # A non-finite score <=> NaN/inf in W or s, s < 0 (sqrt -> NaN), or fp32 overflow: the
        # same condition the torch path checks; the host diagnoses which one.
        bad = (bits >= 0x7F800000) & inb
        bits = tl.where(inb, bits, 0x7FFFFFFF)
        return bits, bad

    @triton.jit
    def _wanda_mask_rows_kernel(
        W,
        S,
        MASK,
        FLAGS,
        stride_wr,
        stride_mr,
        n_cols,
        K,
        num_tiles,
        HAS_S: tl.constexpr,
        WRITE_W: tl.constexpr,
        BLOCK: tl.constexpr,
        SINGLE_TILE: tl.constexpr,
        RADIX: tl.constexpr,
        NUM_PASSES: tl.constexpr,
    ):
        """One program per output row: radix-select the k-th smallest score bit pattern T, then
        prune score < T plus the first (k - count_less) ties in column order. Nothing but the mask
        (and the zeroed weights) is written to global memory."""
        row = tl.program_id(0).to(tl.int64)
        w_row = W + row * stride_wr
        m_row = MASK + row * stride_mr
        offs = tl.arange(0, BLOCK)
        digits = tl.arange(0, 1 << RADIX)

        # int32 scalar tensors (not Python ints) so loop-carried types stay fixed when compiled.
        zero = tl.program_id(0) * 0
        lo = zero  # invariant: count(bits < lo) == count_lo < K
        count_lo = zero
        bad_any = zero
        if SINGLE_TILE:
            bits, bad = _tile_bits(w_row, S, offs, n_cols, HAS_S)
            bad_any = tl.max(bad.to(tl.int32), axis=0)
        for p in tl.static_range(NUM_PASSES):
            # Digit p covers bit positions [shift, shift + width) of the 31 value bits.
            width = RADIX if 31 - RADIX * p >= RADIX else 31 - RADIX * p
            shift = 31 - RADIX * p - width
            valid_d = (digits >= 1) & (digits < (1 << width))
            cand = tl.where(valid_d, lo + (digits << shift), 0x7FFFFFFF)
            if SINGLE_TILE:
                counts = tl.sum((bits[None, :] < cand[:, None]).to(tl.int32), axis=1)
            else:
                counts = tl.zeros([1 << RADIX], dtype=tl.int32)
                for t in range(num_tiles):
                    tb, tbad = _tile_bits(w_row, S, t * BLOCK + offs, n_cols, HAS_S)
                    counts += tl.sum((tb[None, :] < cand[:, None]).to(tl.int32), axis=1)
                    if p == 0:
                        bad_any = tl.maximum(bad_any, tl.max(tbad.to(tl.int32), axis=0))
            # counts is non-decreasing in the digit: the chosen digit is the number of valid
            # candidates still below K.
            sel = valid_d & (counts < K)
            c = tl.sum(sel.to(tl.int32), axis=0)
            count_lo = tl.maximum(count_lo, tl.max(tl.where(sel, counts, 0), axis=0))
            lo = lo + (c << shift)

        T = lo
        need = K - count_lo  # how many entries equal to T are pruned (the first ones in column order)
        # Vector form of "row is finite" (a scalar bool in a store mask trips the interpreter).
        ok = (tl.zeros([BLOCK], dtype=tl.int32) + bad_any) == 0
        if SINGLE_TILE:
            eq = bits == T
            rank = tl.cumsum(eq.to(tl.int32), axis=0)
            prune = (bits < T) | (eq & (rank <= need))
            inb = offs < n_cols
            tl.store(m_row + offs, prune.to(tl.int8), mask=inb)
            if WRITE_W:
                zw = tl.zeros([BLOCK], dtype=W.dtype.element_ty)
                tl.store(w_row + offs, zw, mask=prune & inb & ok)
        else:
            seen = zero
            for t in range(num_tiles):
                cols = t * BLOCK + offs
                tb, tbad = _tile_bits(w_row, S, cols, n_cols, HAS_S)
                eq = tb == T
                rank = tl.cumsum(eq.to(tl.int32), axis=0) + seen
                prune = (tb < T) | (eq & (rank <= need))
                seen += tl.sum(eq.to(tl.int32), axis=0)
                inb = cols < n_cols
                tl.store(m_row + cols, prune.to(tl.int8), mask=inb)
                if WRITE_W:
                    zw = tl.zeros([BLOCK], dtype=W.dtype.element_ty)
                    tl.store(w_row + cols, zw, mask=prune & inb & ok)
        tl.store(FLAGS + row, bad_any.to(tl.int8))

    @triton.jit
    def _wanda_mask_nm_kernel(
        W,
        S,
        MASK,
        FLAGS,
        stride_wr,
        stride_mr,
        n_groups,
        N: tl.constexpr,
        M: tl.constexpr,
        MP: tl.constexpr,
        BLOCK_G: tl.constexpr,
        HAS_S: tl.constexpr,
        WRITE_W: tl.constexpr,
    ):
        """Program (row, group block): rank each score inside its group of M columns by pairwise
        comparison (rank = #smaller + #equal at a lower index) and prune rank < N."""
        row = tl.program_id(0).to(tl.int64)
        gb = tl.program_id(1)
        w_row = W + row * stride_wr
        m_row = MASK + row * stride_mr
        g = gb * BLOCK_G + tl.arange(0, BLOCK_G)
        c = tl.arange(0, MP)
        cols = g[:, None] * M + c[None, :]
        inb = (g[:, None] < n_groups) & (c[None, :] < M)
        w = tl.load(w_row + cols, mask=inb, other=0.0)
        wa = tl.abs(w).to(tl.float32)
        if HAS_S:
            s = tl.load(S + cols, mask=inb, other=1.0).to(tl.float32)
            score = wa * tl.sqrt_rn(s)
        else:
            score = wa
        bits = score.to(tl.int32, bitcast=True) & 0x7FFFFFFF
        bad = (bits >= 0x7F800000) & inb  # non-finite score (see _tile_bits)
        bits = tl.where(inb, bits, 0x7FFFFFFF)  # padding never ranks below a real score
        bi = bits[:, :, None]
        bj = bits[:, None, :]
        before = (bj < bi) | ((bj == bi) & (c[None, None, :] < c[None, :, None]))
        rank = tl.sum(before.to(tl.int32), axis=2)
        prune = rank < N
        bad_any = tl.max(tl.max(bad.to(tl.int32), axis=1), axis=0)
        ok = (tl.zeros([BLOCK_G, MP], dtype=tl.int32) + bad_any) == 0
        tl.store(m_row + cols, prune.to(tl.int8), mask=inb)
        if WRITE_W:
            zero = tl.zeros([BLOCK_G, MP], dtype=W.dtype.element_ty)
            tl.store(w_row + cols, zero, mask=prune & inb & ok)
        n_gb = tl.num_programs(1)
        tl.store(FLAGS + row * n_gb + gb, bad_any.to(tl.int8))



# --------------------------------------------------------------------------------------------------
# Launcher
# --------------------------------------------------------------------------------------------------


def _next_pow2(x: int) -> int:
    return 1 << max(0, (int(x) - 1).bit_length())


def wanda_mask_triton(
    weight: torch.Tensor,
    sq_norms: Optional[torch.Tensor],
    k_or_n: int,
    m: int,
    write_weight: bool = False,
    block: Optional[int] = None,
    radix_bits: Optional[int] = None,
    num_warps: Optional[int] = None,
) -> torch.Tensor:
    """Triton backend: one launch per matrix. `m == 0` = unstructured (k = k_or_n), else N:M.

    With write_weight=True the pruned entries of `weight` are zeroed by the same launch. Non-finite
    values are detected in-kernel; the offending rows (row/group-blocks for N:M) are not written, a
    ValueError is raised after the launch, and other rows may already have been pruned in place.
    `block` / `radix_bits` / `num_warps` override the tuning defaults (tests use small blocks to
    exercise the multi-tile loop).
    """
    if not HAS_TRITON:  # pragma: no cover
        raise KernelInputError("triton cannot be imported; use backend='torch'")
    rows, cols = weight.shape
    if weight.stride(1) != 1 and not write_weight:
        weight = weight.contiguous()  # read-only use: a contiguous copy is fine
    if weight.stride(1) != 1:
        raise KernelInputError(
            f"weight must have unit stride along the input dimension, got strides {weight.stride()}; "
            "pass weight.contiguous() (and copy the result back for in-place pruning)"
        )
    dev = weight.device
    mask = torch.empty((rows, cols), dtype=torch.bool, device=dev)
    if rows == 0 or cols == 0:
        return mask
    s = None
    if sq_norms is not None:
        s = sq_norms if sq_norms.dtype == torch.float32 else sq_norms.float()
        s = s.contiguous()
    s_arg = s if s is not None else weight  # dummy pointer, never read when HAS_S is False
    mask_u8 = mask.view(torch.int8)
    if k_or_n <= 0:  # nothing to prune (k == 0, or n == 0 for N:M): no launch
        # Still scan for non-finite values so the contract "never a silent mask" holds.
        if not bool(torch.isfinite(wanda_score(weight, s).amax())):
            _raise_nonfinite(weight, s)
        mask.zero_()
        return mask
    if m == 0:
        k = k_or_n
        if block is None:
            p2 = _next_pow2(cols)
            blk = p2 if p2 <= MASK_SINGLE_TILE_MAX else MASK_BLOCK
        else:
            blk = block
        blk = max(16, blk)
        radix = radix_bits or RADIX_BITS
        flags = torch.empty(rows, dtype=torch.int8, device=dev)
        _wanda_mask_rows_kernel[(rows,)](
            weight,
            s_arg,
            mask_u8,
            flags,
            weight.stride(0),
            mask_u8.stride(0),
            cols,
            k,
            triton.cdiv(cols, blk),  # runtime tile count: one compiled variant serves all widths
            HAS_S=s is not None,
            WRITE_W=write_weight,
            BLOCK=blk,
            SINGLE_TILE=cols <= blk,
            RADIX=radix,
            NUM_PASSES=triton.cdiv(31, radix),
            num_warps=num_warps or max(4, min(16, blk // 256)),  # ~8 elements per thread
        )
    else:
        n = k_or_n
        n_groups = cols // m
        mp = _next_pow2(m)
        block_g = block or max(1, NM_PAIRWISE_ELEMS // (mp * mp))
        block_g = _next_pow2(block_g)
        n_gb = triton.cdiv(n_groups, block_g)
        flags = torch.empty((rows, n_gb), dtype=torch.int8, device=dev)
        _wanda_mask_nm_kernel[(rows, n_gb)](
            weight,
            s_arg,
            mask_u8,
            flags,
            weight.stride(0),
            mask_u8.stride(0),
            n_groups,
            N=n,
            M=m,
            MP=mp,
            BLOCK_G=block_g,
            HAS_S=s is not None,
            WRITE_W=write_weight,
            num_warps=num_warps or 4,
        )
    if bool(flags.any()):  # the one host sync: never hand back a mask built from NaN/inf
        _raise_nonfinite(weight, s, partly_pruned=write_weight)
    return mask


# --------------------------------------------------------------------------------------------------
# Torch path (the CPU path): no full sort
# --------------------------------------------------------------------------------------------------


def _select_k_smallest(score: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the k smallest entries per row, ties to the lower column index (== stable sort).

    A partial selection gives the per-row threshold t = k-th smallest value; everything < t is
    pruned, and of the entries equal to t only the first (k - count_less) in column order (cumsum
    rank). topk's own tie choice is irrelevant: only the threshold value is used. topk is asked for
    the smaller side (k smallest or cols-k+1 largest) since its cost grows with the count.
    """
    rows, cols = score.shape
    if k <= 0:
        return torch.zeros((rows, cols), dtype=torch.bool, device=score.device)
    if k >= cols:
        return torch.ones((rows, cols), dtype=torch.bool, device=score.device)
    if k <= cols - k + 1:
        t = torch.topk(score, k, dim=1, largest=False, sorted=False).values.amax(dim=1, keepdim=True)
    else:
        t = torch.topk(score, cols - k + 1, dim=1, largest=True, sorted=False).values.amin(dim=1, keepdim=True)
    mask = score < t
    # int32 counts: a bool sum to the default int64 converts the whole mask first (slow on CPU).
    need = k - mask.sum(dim=1, keepdim=True, dtype=torch.int32)
    eq = score == t
    n_eq = eq.sum(dim=1, keepdim=True, dtype=torch.int32)
    tied = (n_eq > need).squeeze(1)
    # Rows where every entry equal to t is pruned need no ranking (the common case for continuous
    # scores: t occurs once). Only rows with surplus ties pay for the cumsum.
    if bool(tied.any()):
        rows_t = tied.nonzero().squeeze(1)
        eq_t = eq.index_select(0, rows_t)
        rank = eq_t.cumsum(dim=1, dtype=torch.int32)  # 1-based rank among the ties, in column order
        eq.index_copy_(0, rows_t, eq_t & (rank <= need.index_select(0, rows_t)))
    mask |= eq
    return mask


# Largest group size for which counting ranks (m elementwise passes) beats a size-m sort per group
# on CPU (docs/kernels.md).
_RANK_COUNT_MAX_M = 8


def _rank_in_group(grouped: torch.Tensor) -> torch.Tensor:
    """int8 [..., m]: each entry's 0-based position in its group's stable ascending order, i.e. the
    number of smaller entries plus the equal ones at lower columns."""
    m = grouped.shape[-1]
    rank = torch.zeros(grouped.shape, dtype=torch.int8, device=grouped.device)
    for j in range(m):
        column = grouped[..., j : j + 1]
        rank += column < grouped
        if j + 1 < m:
            rank[..., j + 1 :] += column == grouped[..., j + 1 :]
    return rank


def _nm_mask_torch(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    rows, cols = score.shape
    if n == 0:
        return torch.zeros((rows, cols), dtype=torch.bool, device=score.device)
    grouped = score.view(rows, cols // m, m)
    if m <= _RANK_COUNT_MAX_M:
        return (_rank_in_group(grouped) < n).view(rows, cols)
    idx = torch.sort(grouped, dim=-1, stable=True)[1][..., :n]  # sort of size m only
    mask = torch.zeros_like(grouped, dtype=torch.bool)
    mask.scatter_(-1, idx, True)
    return mask.view(rows, cols)


def wanda_mask_torch(
    weight: torch.Tensor,
    sq_norms: Optional[torch.Tensor],
    k_or_n: int,
    m: int,
    row_chunk: int = 4096,
) -> torch.Tensor:
    """Torch backend. `m == 0` means unstructured with k = k_or_n; else N:M with n = k_or_n.

    Rows are processed in chunks so the fp32 score + temporaries stay bounded for huge matrices.
    Raises ValueError on non-finite inputs before returning any mask.
    """
    rows = weight.shape[0]
    out = torch.empty(weight.shape, dtype=torch.bool, device=weight.device) if rows > row_chunk else None
    for r0 in range(0, rows, row_chunk):
        score = wanda_score(weight[r0 : r0 + row_chunk], sq_norms)
        # Scores are >= 0, so the max is finite iff every score is: one cheap reduction catches
        # NaN/inf in W or s and negative s (sqrt -> NaN). Diagnosed precisely only on failure.
        if score.numel() and not bool(torch.isfinite(score.amax())):
            _raise_nonfinite(weight, sq_norms)
        part = _select_k_smallest(score, k_or_n) if m == 0 else _nm_mask_torch(score, k_or_n, m)
        if out is None:
            return part  # single chunk: no copy
        out[r0 : r0 + row_chunk] = part
    if out is None:  # zero rows
        return torch.zeros(weight.shape, dtype=torch.bool, device=weight.device)
    return out


# --------------------------------------------------------------------------------------------------
# Oracle
# --------------------------------------------------------------------------------------------------


def wanda_mask_reference(
    weight: torch.Tensor,
    sq_norms: Optional[torch.Tensor],
    sparsity: float = 0.5,
    n: Optional[int] = None,
    m: Optional[int] = None,
) -> torch.Tensor:
    """The oracle: a full stable sort per row (unstructured) or per column group (N:M).

    Deliberately the plain, obviously-correct formulation; tests compare every fast path against it.
    """
    score = wanda_score(weight, sq_norms)
    mask = torch.zeros(score.shape, dtype=torch.bool, device=score.device)
    if n is not None:
        assert m is not None
        for g in range(0, score.shape[1], m):  # the reference's Python loop over column groups
            idx = torch.sort(score[:, g : g + m], dim=1, stable=True)[1][:, :n]
            mask.scatter_(1, idx + g, True)
        return mask
    k = int(score.shape[1] * sparsity)
    idx = torch.sort(score, dim=-1, stable=True)[1][:, :k]
    mask.scatter_(1, idx, True)
    return mask


# --------------------------------------------------------------------------------------------------
# Custom ops (for torch.compile; see OP_NAMESPACE) and the public functions
# --------------------------------------------------------------------------------------------------


def _wanda_mask_impl(
    weight: torch.Tensor, sq_norms: Optional[torch.Tensor], k_or_n: int, m: int, backend: str
) -> torch.Tensor:
    if backend == "triton":
        return wanda_mask_triton(weight, sq_norms, k_or_n, m, write_weight=False)
    return wanda_mask_torch(weight, sq_norms, k_or_n, m)


def _wanda_prune_impl(
    weight: torch.Tensor, sq_norms: Optional[torch.Tensor], k_or_n: int, m: int, backend: str
) -> torch.Tensor:
    if backend == "triton":
        if weight.stride(1) == 1:
            return wanda_mask_triton(weight, sq_norms, k_or_n, m, write_weight=True)
        # The kernel writes rows of unit stride: prune a contiguous copy, then write it back.
        dense = weight.contiguous()
        mask = wanda_mask_triton(dense, sq_norms, k_or_n, m, write_weight=True)
        weight.copy_(dense)
        return mask
    # Torch path: the mask is complete (and validated) before the weight is touched.
    mask = wanda_mask_torch(weight, sq_norms, k_or_n, m)
    zero_pruned_(weight, mask)
    return mask


_wanda_mask_op = torch.library.custom_op(f"{OP_NAMESPACE}::wanda_mask", _wanda_mask_impl, mutates_args=())
_wanda_prune_op = torch.library.custom_op(
    f"{OP_NAMESPACE}::wanda_prune_", _wanda_prune_impl, mutates_args=("weight",)
)


@_wanda_mask_op.register_fake
@_wanda_prune_op.register_fake
def _(weight, sq_norms, k_or_n, m, backend):
    return weight.new_empty(weight.shape, dtype=torch.bool)


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
    return _call(_wanda_mask_op, _wanda_mask_impl, weight, sq_norms, sparsity, n, m, backend)


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
    return _call(_wanda_prune_op, _wanda_prune_impl, weight, sq_norms, sparsity, n, m, backend)


def _call(op, impl, weight, sq_norms, sparsity, n, m, backend) -> torch.Tensor:
    """Check the arguments, resolve the backend, and run the implementation (its custom op while
    torch.compile traces)."""
    k_or_n, group = _check_mask_args(weight, sq_norms, sparsity, n, m)
    be = _mask_backend(backend, weight, sq_norms, group)
    return (op if torch.compiler.is_compiling() else impl)(weight, sq_norms, k_or_n, group, be)
