"""CPU benchmark: torch fast path of `kernels.wanda_mask` vs the reference's full stable sort.

The reference (locuslab/wanda) ranks each row with `torch.sort(score, dim=-1, stable=True)` and
takes the first k indices; `kernels.wanda_mask_reference` is that formulation. The fast path gets
the same mask from a partial selection (threshold) + a tie rank, without a full sort.

pytest-benchmark (its table shows each time and, in parentheses, the ratio to the fastest in the
group; groups are per row width):
    python -m pytest benchmarks/bench_kernels.py --benchmark-enable --benchmark-group-by=group \
        --benchmark-columns=min,median,rounds -q
Plain table with ratios (what BENCHMARKS.md quotes):
    python benchmarks/bench_kernels.py [--rows 128] [--threads 1]
BENCH_THREADS=N sets torch's intra-op threads for the pytest mode as well (default: torch's).
GPU figures (needs CUDA + triton; what benchmarks/gpu_check.sh runs):
    python benchmarks/bench_kernels.py --gpu --out DIR
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import json
from typing import Any, Callable, Dict, List, Optional

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kernels import wanda_mask, wanda_mask_reference  # noqa: E402

WIDTHS = [4096, 11008, 14336, 28672]  # LLaMA-2 7B/13B hidden + MLP widths, 70B MLP width
ROWS = 128
SPARSITY = 0.5

if os.environ.get("BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["BENCH_THREADS"]))


def _inputs(rows: int, cols: int, dtype: torch.dtype = torch.float16):
    g = torch.Generator().manual_seed(cols)
    w = torch.randn(rows, cols, generator=g).to(dtype)
    s = torch.rand(cols, generator=g) * 10
    return w, s


def _impls(w: torch.Tensor, s: torch.Tensor, n=None, m=None) -> Dict[str, Callable[[], torch.Tensor]]:
    return {
        "torch_fast": lambda: wanda_mask(w, s, SPARSITY, n=n, m=m, backend="torch"),
        "reference_sort": lambda: wanda_mask_reference(w, s, SPARSITY, n=n, m=m),
    }


# ----------------------------------------------------------------------------- pytest-benchmark


@pytest.mark.parametrize("impl", ["torch_fast", "reference_sort"])
@pytest.mark.parametrize("cols", WIDTHS)
def test_wanda_mask_cpu(benchmark, cols: int, impl: str) -> None:
    w, s = _inputs(ROWS, cols)
    fns = _impls(w, s)
    benchmark.group = f"wanda_mask {ROWS}x{cols} fp16, 50%"
    benchmark.extra_info.update(rows=ROWS, cols=cols, threads=torch.get_num_threads())
    got = benchmark.pedantic(fns[impl], rounds=5, warmup_rounds=1, iterations=1)
    if impl == "torch_fast":  # equal-to-reference is the point; check it once per width
        assert torch.equal(got, fns["reference_sort"]())


@pytest.mark.parametrize("impl", ["torch_fast", "reference_sort"])
def test_wanda_mask_nm_cpu(benchmark, impl: str) -> None:
    w, s = _inputs(ROWS, 4096)
    fns = _impls(w, s, n=2, m=4)
    benchmark.group = f"wanda_mask 2:4 {ROWS}x4096 fp16 (reference: loop over column groups)"
    got = benchmark.pedantic(fns[impl], rounds=3, warmup_rounds=1, iterations=1)
    if impl == "torch_fast":
        assert torch.equal(got, fns["reference_sort"]())


# ----------------------------------------------------------------------------- plain table


def _min_time(fn: Callable[[], object], rounds: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# ----------------------------------------------------------------------------- GPU mode

# (name, out_features, in_features) of every pruned linear, LLaMA-2 (70B uses GQA: k/v are 1024 wide).
LLAMA2_SHAPES = {
    "7B": [("q/k/v/o", 4096, 4096), ("gate/up", 11008, 4096), ("down", 4096, 11008)],
    "13B": [("q/k/v/o", 5120, 5120), ("gate/up", 13824, 5120), ("down", 5120, 13824)],
    "70B": [("q/o", 8192, 8192), ("k/v", 1024, 8192), ("gate/up", 28672, 8192), ("down", 8192, 28672)],
}
# Nominal HBM bandwidth (GB/s) by device-name substring, for context only; the ratio that matters is
# against the copy bandwidth measured on the same device.
NOMINAL_BW = {"H200": 4800, "H100 PCIe": 2000, "H100": 3350, "A100-SXM4-80GB": 2039, "A100": 1555,
              "L40S": 864, "A10": 600, "RTX 4090": 1008}


DEV = "cuda"
DRY_RUN = False  # --gpu-dry-run: the GPU code path on CPU, tiny shapes, to check the script itself
LINEAR_SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096), (8192, 28672)]  # (K in, N out)
LINEAR_TOKENS = (2048, 16384)
SWEEP_SHAPES = [(11008, 4096), (4096, 11008), (8192, 28672)]


def _bench_ms(fn: Callable[[], Any]) -> float:
    """Median ms with Triton's do_bench (it flushes L2 between runs, so W really comes from HBM)."""
    if DRY_RUN:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=10, rep=60, return_mode="median"))


def _sync() -> None:
    if not DRY_RUN:
        torch.cuda.synchronize()


def _gpu_mask_section(budget_end: float, rows_out: List[dict], lines: List[str], copy_bw: float) -> None:
    from kernels.wanda_mask import wanda_mask_triton

    lines += [
        "## wanda mask kernel (Triton, one launch per matrix) vs torch paths",
        "",
        "bytes = read W + write W + read statistics (= 2*out*in*elt + 4*in; the mask write, 1 byte per",
        "entry, is not counted). GB/s of `wanda_prune_` (score + select + zero W + write mask).",
        f"% = of the measured device copy bandwidth ({copy_bw:.0f} GB/s). `mask` = `wanda_mask` only",
        "(no W write). `torch fast` = this package's torch path on GPU (topk threshold + tie rank).",
        "`reference sort` = fp32 score + full stable torch.sort + scatter, as locuslab/wanda does.",
        "",
        "| model | matrix | out x in | dtype | prune ms | GB/s | % copy BW | mask ms | torch fast ms "
        "| reference sort ms | sort / prune | equal to ref |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for model, shapes in LLAMA2_SHAPES.items():
        for name, out_f, in_f in shapes:
            for dtype in (torch.float16, torch.bfloat16):
                if time.time() > budget_end:
                    lines.append(f"| {model} | {name} | (skipped: time budget) |||||||||")
                    continue
                g = torch.Generator(device=DEV).manual_seed(out_f + in_f)
                w = torch.randn(out_f, in_f, device=DEV, generator=g).to(dtype)
                s = torch.rand(in_f, device=DEV, generator=g) * 100
                k = int(in_f * SPARSITY)
                ref_mask = wanda_mask_reference(w, s, SPARSITY)
                got = wanda_mask_triton(w, s, k, 0)
                equal = bool(torch.equal(got, ref_mask))
                work = w.clone()
                t_prune = _bench_ms(lambda: wanda_mask_triton(work, s, k, 0, write_weight=True))
                t_mask = _bench_ms(lambda: wanda_mask_triton(w, s, k, 0))
                t_torch = _bench_ms(lambda: wanda_mask(w, s, SPARSITY, backend="torch"))
                t_ref = _bench_ms(lambda: wanda_mask_reference(w, s, SPARSITY))
                nbytes = 2 * w.numel() * w.element_size() + 4 * in_f
                gbs = nbytes / (t_prune * 1e-3) / 1e9
                row = dict(section="mask", model=model, matrix=name, out=out_f, inp=in_f, dtype=str(dtype),
                           prune_ms=t_prune, gbps=gbs, pct_copy_bw=100 * gbs / copy_bw, mask_ms=t_mask,
                           torch_fast_ms=t_torch, reference_sort_ms=t_ref, equal=equal)
                rows_out.append(row)
                lines.append(
                    f"| {model} | {name} | {out_f}x{in_f} | {str(dtype)[6:]} | {t_prune:.3f} | {gbs:.0f} | "
                    f"{row['pct_copy_bw']:.0f}% | {t_mask:.3f} | {t_torch:.3f} | {t_ref:.3f} | "
                    f"{t_ref / t_prune:.1f}x | {equal} |"
                )
                del w, work, ref_mask, got
    lines.append("")


def _gpu_nm_section(budget_end: float, rows_out: List[dict], lines: List[str]) -> None:
    from kernels.wanda_mask import wanda_mask_triton

    lines += [
        "## N:M (2:4) masks",
        "",
        "`reference loop` = the reference's Python loop over column groups (7B shapes only: it issues",
        "in/4 small sorts).",
        "",
        "| model | matrix | dtype | Triton prune ms | GB/s | torch fast ms | reference loop ms | equal |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for model, shapes in LLAMA2_SHAPES.items():
        for name, out_f, in_f in shapes:
            dtype = torch.float16
            if time.time() > budget_end:
                lines.append(f"| {model} | {name} | (skipped: time budget) ||||||")
                continue
            w = torch.randn(out_f, in_f, device=DEV).to(dtype)
            s = torch.rand(in_f, device=DEV)
            work = w.clone()
            got = wanda_mask_triton(w, s, 2, 4)
            t_prune = _bench_ms(lambda: wanda_mask_triton(work, s, 2, 4, write_weight=True))
            t_torch = _bench_ms(lambda: wanda_mask(w, s, n=2, m=4, backend="torch"))
            if model == "7B":
                ref = wanda_mask_reference(w, s, n=2, m=4)
                equal = str(bool(torch.equal(got, ref)))
                t0 = time.perf_counter()
                wanda_mask_reference(w, s, n=2, m=4)
                _sync()
                t_ref = f"{(time.perf_counter() - t0) * 1e3:.1f}"
            else:
                equal = str(bool(torch.equal(got, wanda_mask(w, s, n=2, m=4, backend="torch")))) + " (vs torch)"
                t_ref = "-"
            gbs = (2 * w.numel() * w.element_size() + 4 * in_f) / (t_prune * 1e-3) / 1e9
            rows_out.append(dict(section="nm", model=model, matrix=name, prune_ms=t_prune, gbps=gbs,
                                 torch_fast_ms=t_torch, reference_loop_ms=t_ref, equal=equal))
            lines.append(f"| {model} | {name} | fp16 | {t_prune:.3f} | {gbs:.0f} | {t_torch:.3f} | {t_ref} | {equal} |")
    lines.append("")


def _gpu_sweep_section(budget_end: float, rows_out: List[dict], lines: List[str]) -> None:
    from kernels.wanda_mask import wanda_mask_triton

    lines += [
        "## Mask kernel tuning sweep (wanda_prune_, fp16; defaults in kernels/wanda_mask.py)",
        "",
        "| out x in | block | radix bits | warps | ms |",
        "|---|---:|---:|---:|---:|",
    ]
    configs = [(None, None, None), (1024, 4, 4), (2048, 4, 8), (4096, 4, 16), (2048, 2, 8), (4096, 2, 16), (1024, 2, 4)]
    for out_f, in_f in SWEEP_SHAPES:
        w = torch.randn(out_f, in_f, device=DEV).half()
        s = torch.rand(in_f, device=DEV)
        k = int(in_f * SPARSITY)
        for blk, radix, warps in configs:
            if time.time() > budget_end:
                break
            work = w.clone()
            t = _bench_ms(lambda: wanda_mask_triton(work, s, k, 0, write_weight=True, block=blk,
                                                    radix_bits=radix, num_warps=warps))
            rows_out.append(dict(section="sweep", out=out_f, inp=in_f, block=blk, radix=radix, warps=warps, ms=t))
            label = "default" if blk is None else str(blk)
            lines.append(f"| {out_f}x{in_f} | {label} | {radix or '-'} | {warps or '-'} | {t:.3f} |")
    lines.append("")


def _reference_hook_stat(x: torch.Tensor, s: torch.Tensor, nsamples: int) -> None:
    """The reference's per-linear hook (running mean of ||x_j||^2 over samples)."""
    inp = x.reshape(-1, x.shape[-1]).t().float()
    s *= nsamples / (nsamples + 1)
    s += torch.norm(inp, p=2, dim=1) ** 2 / (nsamples + 1)


def _gpu_linear_section(budget_end: float, rows_out: List[dict], lines: List[str]) -> None:
    from kernels import accumulate_sq_norms, linear_with_sq_norms, sq_norms_reference
    import torch.nn.functional as F

    lines += [
        "## linear_with_sq_norms (fused GEMM + statistic) vs separate passes",
        "",
        "`fused` = Triton GEMM that also accumulates sum(x^2) per input column. `F.linear + torch red.`",
        "= cuBLAS GEMM then a separate fp32 reduction (this package's torch backend). `+ Triton red.` =",
        "cuBLAS then the Triton reduction kernel. `reference hook` = cuBLAS + the reference's",
        "torch.norm(x.float())**2 hook. `Triton GEMM` = the same kernel without the statistic. TFLOP/s of",
        "the fused kernel = 2*M*N*K / time. y err = max |y - F.linear| / max |F.linear|; stat err = max",
        "relative error vs an fp64 oracle.",
        "",
        "| tokens M | in K -> out N | dtype | fused ms | TFLOP/s | Triton GEMM ms | F.linear ms | F.linear + torch red. ms "
        "| + Triton red. ms | reference hook ms | y err | stat err |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m_tok in LINEAR_TOKENS:
        for k_in, n_out in LINEAR_SHAPES:
            for dtype in (torch.float16, torch.bfloat16):
                if time.time() > budget_end:
                    lines.append(f"| {m_tok} | {k_in}->{n_out} | (skipped: time budget) ||||||||||")
                    continue
                x = torch.randn(m_tok, k_in, device=DEV).to(dtype)
                w = (torch.randn(n_out, k_in, device=DEV) / k_in**0.5).to(dtype)
                s = torch.zeros(k_in, device=DEV)
                y = linear_with_sq_norms(x, w, None, sq_norms=s, backend="triton")
                y_ref = F.linear(x, w)
                y_err = float((y.float() - y_ref.float()).abs().max() / y_ref.float().abs().max())
                ref_s = sq_norms_reference(x)
                s_err = float(((s.double() - ref_s).abs() / ref_s.clamp_min(1e-30)).max())
                t_fused = _bench_ms(lambda: linear_with_sq_norms(x, w, None, sq_norms=s, backend="triton"))
                t_gemm = _bench_ms(lambda: linear_with_sq_norms(x, w, None, backend="triton"))
                t_lin = _bench_ms(lambda: F.linear(x, w))
                t_sep = _bench_ms(lambda: (F.linear(x, w), accumulate_sq_norms(x, s, backend="torch")))
                t_sep_tr = _bench_ms(lambda: (F.linear(x, w), accumulate_sq_norms(x, s, backend="triton")))
                t_hook = _bench_ms(lambda: (F.linear(x, w), _reference_hook_stat(x, s, 1)))
                tflops = 2 * m_tok * n_out * k_in / (t_fused * 1e-3) / 1e12
                rows_out.append(dict(section="linear", tokens=m_tok, k=k_in, n=n_out, dtype=str(dtype),
                                     fused_ms=t_fused, tflops=tflops, triton_gemm_ms=t_gemm, flinear_ms=t_lin,
                                     separate_torch_ms=t_sep, separate_triton_ms=t_sep_tr,
                                     reference_hook_ms=t_hook, y_err=y_err, stat_err=s_err))
                lines.append(
                    f"| {m_tok} | {k_in}->{n_out} | {str(dtype)[6:]} | {t_fused:.3f} | {tflops:.0f} | {t_gemm:.3f} | "
                    f"{t_lin:.3f} | {t_sep:.3f} | {t_sep_tr:.3f} | {t_hook:.3f} | {y_err:.1e} | {s_err:.1e} |"
                )
                del x, w, y, y_ref
    lines.append("")


def gpu_main(out_dir: str, budget_s: float, dry_run: bool = False) -> int:
    global DEV, DRY_RUN, LLAMA2_SHAPES, LINEAR_SHAPES, LINEAR_TOKENS, SWEEP_SHAPES
    if dry_run:
        DEV, DRY_RUN = "cpu", True
        LLAMA2_SHAPES = {"tiny": [("a", 8, 64), ("b", 4, 96)]}
        LINEAR_SHAPES, LINEAR_TOKENS, SWEEP_SHAPES = [(64, 48)], (40,), [(4, 96)]
    elif not torch.cuda.is_available():
        print("--gpu needs CUDA", file=sys.stderr)
        return 2
    import triton

    os.makedirs(out_dir, exist_ok=True)
    t_start = time.time()
    name = "cpu (dry run)" if DRY_RUN else torch.cuda.get_device_name(0)
    nominal = next((v for k, v in NOMINAL_BW.items() if k in name), None)
    src = torch.empty(1 << (16 if DRY_RUN else 29), dtype=torch.float16, device=DEV)  # 1 GiB
    dst = torch.empty_like(src)
    t_copy = _bench_ms(lambda: dst.copy_(src))
    copy_bw = 2 * src.numel() * src.element_size() / (t_copy * 1e-3) / 1e9
    del src, dst
    lines = [
        "# Kernel GPU check",
        "",
        f"device: {name}; torch {torch.__version__}; triton {triton.__version__}; "
        f"measured copy bandwidth {copy_bw:.0f} GB/s (read+write of a 1 GiB buffer)"
        + (f"; nominal {nominal} GB/s" if nominal else ""),
        "Times: median of triton.testing.do_bench (L2 flushed between runs). Sparsity 0.5, random W,",
        "statistics uniform in [0, 100).",
        "",
    ]
    rows: List[dict] = [dict(section="device", name=name, copy_gbps=copy_bw, nominal_gbps=nominal)]
    # Each section gets a share of the budget so a slow one cannot starve the others.
    plan = [(_gpu_mask_section, 0.40), (_gpu_linear_section, 0.30), (_gpu_nm_section, 0.15), (_gpu_sweep_section, 0.15)]
    for fn, share in plan:
        end = time.time() + share * budget_s
        if fn is _gpu_mask_section:
            fn(end, rows, lines, copy_bw)
        else:
            fn(end, rows, lines)
        if not DRY_RUN:
            torch.cuda.empty_cache()
        # Write after every section: a timeout still leaves the finished figures behind.
        with open(os.path.join(out_dir, "gpu_bench.md"), "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(os.path.join(out_dir, "gpu_bench.json"), "w") as f:
            json.dump(rows, f, indent=1)
    print("\n".join(lines))
    print(f"[bench_kernels] GPU benchmarks took {time.time() - t_start:.0f} s; wrote {out_dir}/gpu_bench.md")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=ROWS)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--gpu", action="store_true", help="run the CUDA benchmarks instead")
    ap.add_argument("--out", default="gpu_check_out", help="--gpu: folder for gpu_bench.md/json")
    ap.add_argument("--budget", type=float, default=240.0, help="--gpu: seconds for all sections")
    ap.add_argument("--gpu-dry-run", action="store_true",
                    help="run the --gpu code on CPU with tiny shapes (needs TRITON_INTERPRET=1)")
    args = ap.parse_args(argv)
    if args.gpu or args.gpu_dry_run:
        return gpu_main(args.out, args.budget, dry_run=args.gpu_dry_run)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), rows={args.rows}, "
          f"fp16 weights, sparsity {SPARSITY}, min of {args.rounds} rounds")
    print("| row width | torch fast path (ms) | reference full sort (ms) | speed-up |")
    print("|---:|---:|---:|---:|")
    for cols in WIDTHS:
        w, s = _inputs(args.rows, cols)
        fns = _impls(w, s)
        assert torch.equal(fns["torch_fast"](), fns["reference_sort"]())
        fast = _min_time(fns["torch_fast"], args.rounds)
        ref = _min_time(fns["reference_sort"], args.rounds)
        print(f"| {cols} | {fast * 1e3:.1f} | {ref * 1e3:.1f} | {ref / fast:.1f}x |")
    w, s = _inputs(args.rows, 4096)
    fns = _impls(w, s, n=2, m=4)
    assert torch.equal(fns["torch_fast"](), fns["reference_sort"]())
    fast = _min_time(fns["torch_fast"], max(1, args.rounds // 2))
    ref = _min_time(fns["reference_sort"], max(1, args.rounds // 2))
    print(f"| 4096, 2:4 (reference: per-group loop) | {fast * 1e3:.1f} | {ref * 1e3:.1f} | {ref / fast:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
