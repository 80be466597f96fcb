"""accumulate_sq_norms / linear_with_sq_norms, both backends, against an fp64 oracle and F.linear.

Tolerances: statistic relative error <= 1e-5 vs fp64 (fp32 accumulation of positive terms);
y vs F.linear: fp32 rtol/atol 1e-4 (blocked summation order differs), fp16/bf16 one-ulp-ish
(rtol 1e-2 / 2e-2) since both round an fp32 accumulator to the half type.
"""

import pytest
import torch
import torch.nn.functional as F

from kernels_testutil import DEVICE, SKIP_NO_TRITON
from kernels import accumulate_sq_norms, linear_with_sq_norms, sq_norms_reference

BACKENDS = ["torch", pytest.param("triton", marks=SKIP_NO_TRITON)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
Y_TOL = {torch.float32: (1e-4, 1e-4), torch.float16: (1e-2, 1e-2), torch.bfloat16: (2e-2, 2e-2)}


def _assert_stat(got, x, token_mask=None, prior=None):
    ref = sq_norms_reference(x, token_mask)
    if prior is not None:
        ref = ref + prior.double()
    rel = (got.double() - ref).abs() / ref.abs().clamp_min(1e-30)
    assert got.dtype == torch.float32
    assert float(rel.max()) <= 1e-5, float(rel.max())


def _inputs(shape, dtype, seed, with_mask):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(*shape, generator=g) * 3).to(dtype).to(DEVICE)
    tm = (torch.rand(shape[:-1], generator=g) < 0.7).to(DEVICE) if with_mask else None
    return x, tm


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7, 33), (2, 19, 70), (130, 16)])
@pytest.mark.parametrize("with_mask", [False, True])
def test_accumulate_matches_fp64(backend, dtype, shape, with_mask):
    x, tm = _inputs(shape, dtype, seed=sum(shape), with_mask=with_mask)
    prior = torch.rand(shape[-1]).to(DEVICE)
    s = prior.clone()
    out = accumulate_sq_norms(x, s, tm, backend=backend)
    assert out is s
    _assert_stat(s, x, tm, prior)


@SKIP_NO_TRITON
@pytest.mark.parametrize("max_splits", [1, 3])
def test_accumulate_triton_splits(max_splits):
    """Single split (adds in place) and several splits (partials + ordered reduction)."""
    from kernels.sq_norms import accumulate_sq_norms_triton

    x, tm = _inputs((3, 41, 50), torch.float16, seed=9, with_mask=True)
    s = torch.zeros(50, device=DEVICE)
    accumulate_sq_norms_triton(x, s, tm, block_t=16, block_c=32, max_splits=max_splits)
    _assert_stat(s, x, tm)
    again = torch.zeros(50, device=DEVICE)
    accumulate_sq_norms_triton(x, again, tm, block_t=16, block_c=32, max_splits=max_splits)
    assert torch.equal(s, again)  # deterministic


@pytest.mark.parametrize("backend", BACKENDS)
def test_fully_masked_and_empty(backend):
    x = torch.randn(2, 3, 8).to(DEVICE)
    s = torch.ones(8, device=DEVICE)
    accumulate_sq_norms(x, s, torch.zeros(2, 3, dtype=torch.bool, device=DEVICE), backend=backend)
    assert torch.equal(s, torch.ones(8, device=DEVICE))
    accumulate_sq_norms(torch.randn(0, 8).to(DEVICE), s, backend=backend)
    assert torch.equal(s, torch.ones(8, device=DEVICE))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("with_mask", [False, True])
def test_linear_with_sq_norms(backend, dtype, with_bias, with_mask):
    x, tm = _inputs((3, 21, 40), dtype, seed=5, with_mask=with_mask)
    g = torch.Generator().manual_seed(6)
    w = (torch.randn(36, 40, generator=g) / 6).to(dtype).to(DEVICE)
    b = torch.randn(36, generator=g).to(dtype).to(DEVICE) if with_bias else None
    s = torch.zeros(40, device=DEVICE)
    y = linear_with_sq_norms(x, w, b, sq_norms=s, token_mask=tm, backend=backend)
    ref = F.linear(x.float(), w.float(), None if b is None else b.float())
    rtol, atol = Y_TOL[dtype]
    assert y.dtype == dtype and y.shape == (3, 21, 36)
    torch.testing.assert_close(y.float(), ref, rtol=rtol, atol=atol)
    _assert_stat(s, x, tm)


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_without_statistic(backend):
    x, _ = _inputs((5, 24), torch.float32, seed=1, with_mask=False)
    w = torch.randn(10, 24).to(DEVICE)
    torch.testing.assert_close(linear_with_sq_norms(x, w, backend=backend), F.linear(x, w), rtol=1e-4, atol=1e-4)


@SKIP_NO_TRITON
def test_linear_triton_several_blocks_each_counted_once():
    """N spans several program columns and M several row blocks: each x element counted once."""
    from kernels.sq_norms import linear_with_sq_norms_triton

    x, tm = _inputs((70, 45), torch.float32, seed=2, with_mask=True)
    w = torch.randn(50, 45).to(DEVICE)
    s = torch.zeros(45, device=DEVICE)
    cfg = {"BLOCK_N": 16, "BLOCK_K": 16, "num_warps": 4, "num_stages": 1}
    y = linear_with_sq_norms_triton(x, w, None, s, tm, block_m=16, config=cfg)
    torch.testing.assert_close(y, F.linear(x, w), rtol=1e-4, atol=1e-4)
    _assert_stat(s, x, tm)


# ----------------------------------------------------------------------------- validation


def test_validation_errors():
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match=r"expected \(8,\)"):
        accumulate_sq_norms(x, torch.zeros(7))
    with pytest.raises(ValueError, match="fp32"):
        accumulate_sq_norms(x, torch.zeros(8, dtype=torch.float16))
    with pytest.raises(ValueError, match="torch.bool"):
        accumulate_sq_norms(x, torch.zeros(8), torch.ones(4))
    with pytest.raises(ValueError, match=r"expected \(4,\)"):
        accumulate_sq_norms(x, torch.zeros(8), torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="backend='fast'"):
        accumulate_sq_norms(x, torch.zeros(8), backend="fast")
    with pytest.raises(ValueError, match="weight.shape"):
        linear_with_sq_norms(x, torch.randn(3, 9))
    with pytest.raises(ValueError, match="dtype"):
        linear_with_sq_norms(x, torch.randn(3, 8, dtype=torch.float16))
    with pytest.raises(ValueError, match="bias"):
        linear_with_sq_norms(x, torch.randn(3, 8), torch.randn(4))
    with pytest.raises(ValueError, match="token_mask only"):
        linear_with_sq_norms(x, torch.randn(3, 8), token_mask=torch.ones(4, dtype=torch.bool))
