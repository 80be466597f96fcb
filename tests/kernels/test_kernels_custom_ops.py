"""Custom-op registration (`torch.ops.wanda_kernels.*`): schema/fake checks (opcheck), torch.compile
without graph breaks, eager calls that skip the op, and backend resolution."""

import pytest
import torch

import kernels
from kernels_testutil import DEVICE, TRITON_OK
from kernels.common import OP_NAMESPACE, resolve_backend

OPS = getattr(torch.ops, OP_NAMESPACE)


def _args():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 32, generator=g).to(DEVICE)
    s = torch.rand(32, generator=g).to(DEVICE)
    x = torch.randn(2, 3, 32, generator=g).to(DEVICE)
    tm = (torch.rand(2, 3, generator=g) > 0.5).to(DEVICE)
    return w, s, x, tm


def test_ops_are_registered():
    assert OP_NAMESPACE == "wanda_kernels"
    for name in ("accumulate_sq_norms", "linear_with_sq_norms", "wanda_mask", "wanda_prune_"):
        assert hasattr(OPS, name), name


def test_opcheck_torch_backend():
    w, s, x, tm = _args()
    for k_or_n, m in [(16, 0), (2, 4)]:
        torch.library.opcheck(OPS.wanda_mask, (w, s, k_or_n, m, "torch"))
        torch.library.opcheck(OPS.wanda_mask, (w, None, k_or_n, m, "torch"))
        torch.library.opcheck(OPS.wanda_prune_, (w.clone(), s, k_or_n, m, "torch"))
    torch.library.opcheck(OPS.accumulate_sq_norms, (x, torch.zeros(32, device=DEVICE), tm, "torch"))
    torch.library.opcheck(OPS.linear_with_sq_norms, (x, w, None, torch.zeros(32, device=DEVICE), tm, "torch"))
    torch.library.opcheck(OPS.linear_with_sq_norms, (x, w, torch.randn(16, device=DEVICE), None, None, "torch"))


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_compile_fullgraph(backend):
    """The whole API traces as one graph (fullgraph=True fails on any graph break); aot_eager
    runs the fake impls."""
    w, s, x, tm = _args()

    def step(x, w, s_acc, tm):
        y = kernels.linear_with_sq_norms(x, w, sq_norms=s_acc, token_mask=tm, backend=backend)
        kernels.accumulate_sq_norms(x, s_acc, tm, backend=backend)
        mask = kernels.wanda_mask(w, s_acc, 0.5, backend=backend)
        nm = kernels.wanda_mask(w, s_acc, n=2, m=4, backend=backend)
        return y, mask, nm

    s_eager = torch.zeros(32, device=DEVICE)
    s_comp = torch.zeros(32, device=DEVICE)
    ref = step(x, w, s_eager, tm)
    got = torch.compile(step, backend="aot_eager", fullgraph=True)(x, w, s_comp, tm)
    torch.testing.assert_close(got[0], ref[0])
    assert torch.equal(got[1], ref[1]) and torch.equal(got[2], ref[2])
    torch.testing.assert_close(s_comp, s_eager)


def test_eager_calls_skip_the_custom_op_wrapper():
    """Eager calls run the implementation directly (the op wrapper costs time and memory and adds
    nothing outside torch.compile); the result is the op's."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Namespaces(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.seen.add(func.namespace)
            return func(*args, **(kwargs or {}))

    w, s, x, tm = _args()
    expected = OPS.wanda_prune_(w.clone(), s, 16, 0, "torch")
    with Namespaces() as mode:
        got = kernels.wanda_prune_(w.clone(), s, 0.5, backend="torch")
        kernels.accumulate_sq_norms(x, torch.zeros(32, device=DEVICE), tm, backend="torch")
        kernels.linear_with_sq_norms(x, w, sq_norms=torch.zeros(32, device=DEVICE), backend="torch")
        kernels.wanda_mask(w, s, n=2, m=4, backend="torch")
    assert "aten" in mode.seen and OP_NAMESPACE not in mode.seen
    assert torch.equal(got, expected)


def test_resolve_backend():
    cpu = torch.zeros(1)
    assert resolve_backend("torch", cpu) == "torch"
    assert resolve_backend("auto", cpu) == "torch"  # CPU tensors never pick Triton on "auto"
    with pytest.raises(ValueError, match="backend='cuda'"):
        resolve_backend("cuda", cpu)
    if TRITON_OK or DEVICE == "cuda":
        assert resolve_backend("triton", torch.zeros(1, device=DEVICE)) == "triton"


@pytest.mark.skipif(DEVICE != "cuda" or not TRITON_OK, reason="needs CUDA + triton")
def test_auto_picks_triton_on_cuda():
    assert resolve_backend("auto", torch.zeros(1, device="cuda")) == "triton"
