"""Hypothesis-generated cases for the mask semantics: torch fast path and Triton kernel vs the
stable-sort oracle, bit for bit. Kept apart so the rest of the suite runs without hypothesis."""

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from kernels import wanda_mask, wanda_mask_reference  # noqa: E402
from kernels_testutil import DEVICE, SKIP_NO_TRITON  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _check(w, s, sparsity=0.5, n=None, m=None, backend="torch"):
    w = w.to(DEVICE)
    s = None if s is None else s.to(DEVICE)
    got = wanda_mask(w, s, sparsity, n=n, m=m, backend=backend)
    assert torch.equal(got, wanda_mask_reference(w, s, sparsity, n=n, m=m))


def _triton_mask(w, s, k_or_n, m, **kw):
    from kernels.wanda_mask import wanda_mask_triton

    return wanda_mask_triton(w, s, k_or_n, m, **kw)


@st.composite
def _mask_case(draw):
    rows = draw(st.integers(1, 6))
    cols = draw(st.sampled_from([4, 8, 12, 16, 24, 36, 40]))
    # A small value alphabet forces ties; fp16 rounding adds more.
    vals = st.sampled_from([0.0, -0.0, 0.25, -0.25, 0.5, 1.0, -1.0, 3.0, 1e-3, 65504.0])
    w = torch.tensor(draw(st.lists(vals, min_size=rows * cols, max_size=rows * cols))).view(rows, cols)
    dtype = draw(st.sampled_from(DTYPES))
    s_vals = st.sampled_from([0.0, 1.0, 4.0, 0.5, 2.0, 1e-6, 1e6])
    s = draw(st.one_of(st.none(), st.lists(s_vals, min_size=cols, max_size=cols).map(torch.tensor)))
    sparsity = draw(st.one_of(st.sampled_from([0.0, 0.5, (cols - 1) / cols]), st.floats(0.0, 0.999)))
    nm = draw(st.sampled_from([None, (2, 4), (1, 4), (3, 4)]))
    return w.to(dtype), s, sparsity, nm


@settings(max_examples=150, deadline=None)
@given(_mask_case())
def test_hypothesis_torch_matches_oracle(case):
    w, s, sparsity, nm = case
    if nm is None:
        _check(w, s, sparsity)
    else:
        _check(w, s, n=nm[0], m=nm[1])


@SKIP_NO_TRITON
@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 3),
    cols=st.sampled_from([8, 20, 33]),
    alphabet=st.integers(1, 5),
    dtype=st.sampled_from(DTYPES),
    sparsity=st.floats(0.0, 0.99),
    block=st.sampled_from([None, 16]),
    seed=st.integers(0, 2**16),
)
def test_hypothesis_triton_matches_oracle(rows, cols, alphabet, dtype, sparsity, block, seed):
    g = torch.Generator().manual_seed(seed)
    w = (torch.randint(-alphabet, alphabet + 1, (rows, cols), generator=g) * 0.125).to(dtype).to(DEVICE)
    s = torch.randint(0, alphabet + 1, (cols,), generator=g).float().to(DEVICE)
    k = int(cols * sparsity)
    got = _triton_mask(w, s, k, 0, block=block)
    assert torch.equal(got, wanda_mask_reference(w, s, sparsity))
    if cols % 4 == 0:
        assert torch.equal(_triton_mask(w, s, 2, 4), wanda_mask_reference(w, s, n=2, m=4))
