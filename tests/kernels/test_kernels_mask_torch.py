"""Torch fast path of wanda_mask / wanda_prune_ against the stable-sort oracle, and validation."""

import math

import pytest
import torch

from kernels import wanda_mask, wanda_mask_reference, wanda_prune_, wanda_score, zero_pruned_
from kernels.wanda_mask import wanda_mask_torch

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _sparsities(cols):
    return [0.0, 1.0 / cols, 0.5, 0.7, (cols - 1) / cols]


def _check(w, s, sparsity=0.5, n=None, m=None, backend="torch"):
    got = wanda_mask(w, s, sparsity, n=n, m=m, backend=backend)
    ref = wanda_mask_reference(w, s, sparsity, n=n, m=m)
    assert got.dtype == torch.bool and got.shape == w.shape
    assert torch.equal(got, ref)
    if n is None:
        k = int(w.shape[1] * sparsity)
        assert (got.sum(dim=1) == k).all()  # exactly k per row
    return got


def _adversarial(rows, cols, dtype, gen):
    """Matrices and statistics built to produce many exact ties."""
    cases = {
        "random": (torch.randn(rows, cols, generator=gen), torch.rand(cols, generator=gen)),
        "duplicates": (
            torch.randint(-2, 3, (rows, cols), generator=gen).float(),
            torch.randint(0, 3, (cols,), generator=gen).float(),
        ),
        "equal_rows": (torch.full((rows, cols), 0.5), torch.ones(cols)),
        "zero_rows": (
            torch.where(torch.arange(rows)[:, None] % 2 == 0, 0.0, torch.randn(rows, cols, generator=gen)),
            torch.rand(cols, generator=gen),
        ),
        "zero_stats": (torch.randn(rows, cols, generator=gen), torch.zeros(cols)),
        "some_zero_stats": (
            torch.randn(rows, cols, generator=gen),
            torch.where(torch.rand(cols, generator=gen) < 0.5, 0.0, 1.0),
        ),
        "signed_zeros": (
            torch.where(torch.rand(rows, cols, generator=gen) < 0.5, -0.0, 0.0),
            torch.where(torch.rand(cols, generator=gen) < 0.5, -0.0, 2.0),
        ),
        "no_stats": (torch.randint(-3, 4, (rows, cols), generator=gen).float(), None),
    }
    return {k: (w.to(dtype), s) for k, (w, s) in cases.items()}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 37), (16, 128), (3, 1000)])
def test_unstructured_matches_oracle(dtype, shape, device):
    gen = torch.Generator().manual_seed(1)
    for name, (w, s) in _adversarial(*shape, dtype, gen).items():
        w = w.to(device)
        s = None if s is None else s.to(device)
        for sp in _sparsities(shape[1]):
            _check(w, s, sp)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nm", [(2, 4), (4, 8), (1, 4), (0, 4), (3, 4), (3, 8), (8, 16)])  # m <= 8 counts ranks, m = 16 sorts
def test_nm_matches_oracle(dtype, nm, device):
    n, m = nm
    gen = torch.Generator().manual_seed(2)
    for name, (w, s) in _adversarial(6, 64, dtype, gen).items():
        w = w.to(device)
        s = None if s is None else s.to(device)
        mask = _check(w, s, n=n, m=m)
        assert (mask.view(6, -1, m).sum(-1) == n).all()


def test_wide_rows(device):
    gen = torch.Generator().manual_seed(3)
    w = torch.randint(-4, 5, (2, 53248), generator=gen).to(torch.float16).to(device)
    s = torch.randint(0, 4, (53248,), generator=gen).float().to(device)
    _check(w, s, 0.5)
    _check(w, s, n=2, m=4)


def test_row_chunking_matches():
    gen = torch.Generator().manual_seed(4)
    w = torch.randint(-2, 3, (37, 40), generator=gen).float()
    s = torch.rand(40, generator=gen)
    full = wanda_mask_torch(w, s, 20, 0)
    chunked = wanda_mask_torch(w, s, 20, 0, row_chunk=5)
    assert torch.equal(full, chunked)


def test_score_is_fp32_of_abs_times_sqrt():
    w = torch.tensor([[-2.0, 3.0]], dtype=torch.float16)
    s = torch.tensor([4.0, 9.0])
    assert torch.equal(wanda_score(w, s), torch.tensor([[4.0, 9.0]]))
    assert wanda_score(w, None).dtype == torch.float32


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_prune_zeroes_exactly_the_mask(nm, device):
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(8, 64, generator=gen).to(device)
    s = torch.rand(64, generator=gen).to(device)
    before = w.clone()
    kw = {} if nm is None else {"n": nm[0], "m": nm[1]}
    mask = wanda_prune_(w, s, 0.5, backend="torch", **kw)
    assert torch.equal(mask, wanda_mask_reference(before, s, 0.5, **kw))
    assert (w[mask] == 0).all()
    assert torch.equal(w[~mask], before[~mask])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("transposed", [False, True])
def test_zero_pruned_is_bitwise_masked_fill(dtype, transposed, device):
    # The pruned entries must be +0.0 (not -0.0 as a multiply by 0 gives), kept ones untouched bits.
    gen = torch.Generator().manual_seed(6)
    w = (torch.randn(24, 40, generator=gen) * 3).to(dtype).to(device)
    w = w.t() if transposed else w
    mask = (torch.rand(tuple(w.shape), generator=gen) < 0.5).to(device)
    expected = w.clone().masked_fill_(mask, 0)
    got = zero_pruned_(w, mask)
    assert got is w
    bits = {8: torch.int64, 4: torch.int32, 2: torch.int16}[w.element_size()]
    assert torch.equal(w.view(bits), expected.view(bits))


# ----------------------------------------------------------------------------- errors / validation


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", ["weight", "sq_norms"])
def test_nonfinite_raises_and_leaves_weight(bad, where):
    w = torch.randn(4, 8)
    s = torch.rand(8)
    if where == "weight":
        w[2, 3] = bad
    else:
        s[5] = bad
    before = w.clone()
    with pytest.raises(ValueError, match="NaN or inf"):
        wanda_mask(w, s, 0.5, backend="torch")
    with pytest.raises(ValueError, match="NaN or inf"):
        wanda_prune_(w, s, 0.5, backend="torch")
    assert torch.equal(w.nan_to_num(), before.nan_to_num())  # untouched
    with pytest.raises(ValueError, match="NaN or inf"):
        wanda_mask(w, s, n=2, m=4, backend="torch")
    with pytest.raises(ValueError, match="NaN or inf"):
        wanda_mask(w, s, 0.0, backend="torch")  # even when nothing would be pruned


def test_negative_statistic_raises():
    with pytest.raises(ValueError, match="negative"):
        wanda_mask(torch.randn(2, 4), torch.tensor([1.0, -1.0, 0.0, 2.0]), backend="torch")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"backend": "cuda"}, "backend='cuda'"),
        ({"sparsity": 1.0}, "sparsity=1.0"),
        ({"sparsity": -0.1}, "sparsity=-0.1"),
        ({"sparsity": float("nan")}, "sparsity=nan"),
        ({"sparsity": "half"}, "sparsity='half'"),
        ({"n": 2}, "give both"),
        ({"n": 4, "m": 4}, "n=4, m=4"),
        ({"n": -1, "m": 4}, "n=-1, m=4"),
        ({"n": 2.0, "m": 4}, "integers"),
        ({"n": 2, "m": 3}, "not divisible by m=3"),
    ],
)
def test_bad_arguments(kwargs, match):
    w = torch.randn(4, 8)
    s = torch.rand(8)
    sparsity = kwargs.pop("sparsity", 0.5)
    with pytest.raises(ValueError, match=match):
        wanda_mask(w, s, sparsity, **kwargs)
    with pytest.raises(ValueError, match=match):
        wanda_prune_(w, s, sparsity, **kwargs)


def test_bad_shapes_and_dtypes():
    with pytest.raises(ValueError, match=r"expected \(8,\)"):
        wanda_mask(torch.randn(4, 8), torch.rand(7))
    with pytest.raises(ValueError, match="2-D"):
        wanda_mask(torch.randn(8), torch.rand(8))
    with pytest.raises(ValueError, match="dtype"):
        wanda_mask(torch.ones(4, 8, dtype=torch.int32), torch.rand(8))
    with pytest.raises(ValueError, match=r"expected \(8,\)"):
        wanda_mask(torch.randn(4, 8), torch.rand(2, 4))


def test_error_messages_are_one_line():
    for call in (
        lambda: wanda_mask(torch.randn(4, 8), torch.rand(8), 2.0),
        lambda: wanda_mask(torch.randn(4, 8), torch.full((8,), float("nan"))),
        lambda: wanda_mask(torch.randn(4, 8), torch.rand(8), backend="gpu"),
    ):
        with pytest.raises(ValueError) as info:
            call()
        assert "\n" not in str(info.value)


def test_k_is_int_of_product():
    # int(in * sparsity) exactly as the reference, including float rounding (0.7 * 10 = 7.000000000000001)
    w = torch.randn(3, 10)
    mask = wanda_mask(w, None, 0.7, backend="torch")
    assert (mask.sum(1) == int(10 * 0.7)).all()
    assert int(10 * 0.7) == 7 and math.isclose(0.7 * 10, 7)


def test_score_overflow_raises():
    w = torch.full((2, 4), 1e38)
    s = torch.full((4,), 1e10)
    with pytest.raises(ValueError, match="overflows fp32"):
        wanda_mask(w, s, 0.5, backend="torch")
