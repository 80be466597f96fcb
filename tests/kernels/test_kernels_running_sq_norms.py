"""RunningSqNorms and (linear_with_)update_running_sq_norms: the reference's running-mean statistic.

Torch path: bit-identical to the reference's update applied one batch-1 sample at a time (that is
what keeps batched masks identical to a batch-1 run). Triton path: the batch sum from the kernel,
folded once per batch; relative error <= 1e-5 against the torch path (fp32 sums, another order).
The torch path with per_sample=False folds the batch sum too, with the same tolerance.
"""

import pytest
import torch
import torch.nn.functional as F

from kernels_testutil import DEVICE, SKIP_NO_TRITON
from kernels import (
    RunningSqNorms,
    linear_with_running_sq_norms,
    sq_norms_reference,
    update_running_sq_norms,
)

BACKENDS = ["torch", pytest.param("triton", marks=SKIP_NO_TRITON)]
# (backend, per_sample): every way the statistic can be folded.
FOLDS = [
    pytest.param(("torch", True), id="torch-per-sample"),
    pytest.param(("torch", False), id="torch-batch-sum"),
    pytest.param(("triton", True), id="triton", marks=SKIP_NO_TRITON),
]


def _reference_running_mean(samples: list[torch.Tensor]) -> torch.Tensor:
    """The reference's hook, one sample ([1, L, d]) per forward."""
    mean, count = torch.zeros(samples[0].shape[-1], device=samples[0].device), 0
    for x in samples:
        columns = x.reshape(-1, x.shape[-1]).t().float()
        mean *= count / (count + 1)
        count += 1
        mean += torch.norm(columns, p=2, dim=1) ** 2 / count
    return mean


def _x(shape, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * torch.rand(shape[-1], generator=g) * 4).to(dtype).to(DEVICE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_path_bit_identical_to_batch1_reference(dtype):
    batches = [_x((3, 37, 50), 1, dtype), _x((5, 37, 50), 2, dtype)]
    stat = RunningSqNorms(50, DEVICE)
    for x in batches:
        update_running_sq_norms(stat, x, backend="torch")
    singles = [x[i : i + 1] for x in batches for i in range(x.shape[0])]
    assert stat.samples == 8
    assert torch.equal(stat.mean_sq, _reference_running_mean(singles))


@pytest.mark.parametrize("fold", FOLDS)
def test_mean_times_samples_is_the_sum_of_squares(fold):
    backend, per_sample = fold
    x = _x((4, 29, 40), 3)
    stat = update_running_sq_norms(RunningSqNorms(40, DEVICE), x, backend=backend, per_sample=per_sample)
    assert stat.samples == 4
    expected = sq_norms_reference(x) / 4
    assert float(((stat.mean_sq.double() - expected).abs() / expected).max()) <= 1e-5


@pytest.mark.parametrize("fold", FOLDS)
def test_padding_tokens_excluded(fold):
    backend, per_sample = fold
    x = _x((3, 20, 24), 4)
    token_mask = torch.ones(3, 20, dtype=torch.bool, device=DEVICE)
    token_mask[1, 12:] = False
    token_mask[2, 5:] = False
    padded = x.clone()
    padded[~token_mask] = 1e3  # garbage in the padding must not count
    stat = update_running_sq_norms(RunningSqNorms(24, DEVICE), padded, token_mask, backend=backend, per_sample=per_sample)
    expected = _reference_running_mean([x[0:1], x[1:2, :12], x[2:3, :5]])
    torch.testing.assert_close(stat.mean_sq, expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_returns_f_linear_and_updates(backend):
    x, w, b = _x((2, 9, 16), 5), _x((12, 16), 6), _x((12,), 7)
    stat = RunningSqNorms(16, DEVICE)
    y = linear_with_running_sq_norms(x, w, b, stat, backend=backend)
    torch.testing.assert_close(y, F.linear(x, w, b), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(stat.mean_sq, _reference_running_mean([x[0:1], x[1:2]]), rtol=1e-5, atol=0)
    assert stat.samples == 2


def test_batch_sum_fold_tracks_per_sample_fold_over_batches():
    batches = [_x((3, 37, 50), 10), _x((5, 37, 50), 11), _x((2, 37, 50), 12)]
    per_sample, batch_sum = RunningSqNorms(50, DEVICE), RunningSqNorms(50, DEVICE)
    for x in batches:
        update_running_sq_norms(per_sample, x, backend="torch")
        update_running_sq_norms(batch_sum, x, backend="torch", per_sample=False)
    assert batch_sum.samples == per_sample.samples == 10
    torch.testing.assert_close(batch_sum.mean_sq, per_sample.mean_sq, rtol=1e-5, atol=0)


def test_two_dim_input_is_one_sample():
    x = _x((11, 8), 8)
    stat = update_running_sq_norms(RunningSqNorms(8, DEVICE), x, backend="torch")
    assert stat.samples == 1
    assert torch.equal(stat.mean_sq, _reference_running_mean([x.unsqueeze(0)]))


def test_bad_arguments_raise_value_error():
    x = _x((2, 3, 8), 9)
    with pytest.raises(ValueError, match="RunningSqNorms"):
        update_running_sq_norms(torch.zeros(8), x)
    with pytest.raises(ValueError, match="expected \\(8,\\)"):
        update_running_sq_norms(RunningSqNorms(5, DEVICE), x)
    with pytest.raises(ValueError, match="token_mask"):
        update_running_sq_norms(RunningSqNorms(8, DEVICE), x, torch.ones(2, 4, dtype=torch.bool))
