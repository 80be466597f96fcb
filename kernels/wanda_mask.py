"""Wanda score + per-row selection + masking: torch fast path, Triton kernels, stable-sort oracle.

Semantics (DESIGN.md section 1):
  score = |W|.float() * sqrt(sq_norms.float())            (fp32, broadcast over output rows)
  unstructured: per row the k = int(in * sparsity) smallest scores are pruned, ties to the lower
                column index first (== stable ascending sort, first k indices).
  N:M:          per row and group of m consecutive columns the n smallest scores are pruned, ties to
                the lower column index first.
The returned mask is bool [out, in] with True = pruned.
"""

from __future__ import annotations

from typing import Optional

import torch

from ._common import HAS_TRITON, KernelInputError, raise_nonfinite

# --------------------------------------------------------------------------------------------------
# Score and oracles
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
    weight's bits with a keep mask. On CPU that is about 10x faster than masked_fill_ (the seven
    linears of a SmolLM2 block: 0.6 ms against 6.3 ms, out of 27 ms for their masks)."""
    bits_dtype = _BITS_DTYPE.get(weight.element_size())
    if bits_dtype is None or not weight.is_floating_point():
        return weight.masked_fill_(mask, 0)
    keep_bits = mask.to(bits_dtype).sub_(1)  # pruned → 0, kept → all bits set
    weight.view(bits_dtype).bitwise_and_(keep_bits)
    return weight


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
# Torch fast path (the CPU path): no full sort
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
# (CPU, [1536, 576]: 2:4 3.5 vs 6.5 ms, 4:8 5.8 vs 6.4 ms, 8:16 9.5 vs 8.9 ms).
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
            raise_nonfinite(weight, sq_norms)
        part = _select_k_smallest(score, k_or_n) if m == 0 else _nm_mask_torch(score, k_or_n, m)
        if out is None:
            return part  # single chunk: no copy
        out[r0 : r0 + row_chunk] = part
    if out is None:  # zero rows
        return torch.zeros(weight.shape, dtype=torch.bool, device=weight.device)
    return out


# --------------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------------

# Defaults for the GPU (untuned guesses; benchmarks/gpu_check.sh sweeps them). RADIX_BITS digits are
# resolved per pass: ceil(31 / RADIX_BITS) passes over the row, each counting 2**RADIX_BITS - 1
# candidate thresholds at once.
# Register use on sm_90 (ptxas, checked by tests/kernels/test_kernels_compile.py's script): BLOCK 2048
# / 8 warps / radix 4 -> 94 regs, no spills; radix 8 spills (255 regs + stack), so 4 is the cap.
MASK_BLOCK = 2048  # column tile of a row wider than MASK_SINGLE_TILE_MAX
MASK_SINGLE_TILE_MAX = 4096  # rows up to this width are held in registers for all passes
RADIX_BITS = 4
NM_PAIRWISE_ELEMS = 4096  # BLOCK_G * MP * MP for the N:M pairwise-rank tile
# One program per row: a row this wide (e.g. a whole matrix flattened for a global magnitude
# threshold) would run on a single SM, so such calls use the torch path (also fine on CUDA).
TRITON_MAX_ROW = 1 << 20

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
        n_cols = n_groups * M
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
    if m == 0 and cols > TRITON_MAX_ROW:
        mask = wanda_mask_torch(weight, s, k_or_n, 0, row_chunk=max(1, (1 << 26) // cols))
        if write_weight:
            zero_pruned_(weight, mask)
        return mask
    if k_or_n <= 0:  # nothing to prune (k == 0, or n == 0 for N:M): no launch
        # Still scan for non-finite values so the contract "never a silent mask" holds.
        if not bool(torch.isfinite(wanda_score(weight, s).amax())):
            raise_nonfinite(weight, s)
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
        raise_nonfinite(weight, s, partly_pruned=write_weight)
    return mask
