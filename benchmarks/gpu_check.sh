#!/usr/bin/env bash
# GPU check for the kernels package (needs one CUDA GPU + triton; about 6-8 minutes).
#
# What it measures / checks, in order:
#   1. env.txt          nvidia-smi, torch / triton versions, sm_XX register use of every kernel.
#   2. pytest_kernels.log  tests/kernels compiled for the real GPU (no interpreter): every Triton
#                       kernel against its torch oracle, masks bit for bit, norms to 1e-5.
#   3. gpu_bench.md/json  (benchmarks/bench_kernels.py --gpu)
#        - wanda mask kernel time and GB/s for every LLaMA-2 7B/13B/70B linear shape, fp16 and bf16,
#          bytes = read W + write W + read statistics, against the device's measured copy bandwidth;
#          the torch fast path and the reference full-sort path on the same GPU; mask equality;
#        - linear_with_sq_norms (fused GEMM + statistic) vs F.linear + a separate reduction, vs
#          F.linear alone, vs the reference hook; y error vs F.linear and statistic error vs fp64;
#        - N:M 2:4 kernel vs torch / the reference per-group loop; a block/radix tuning sweep.
#   4. gpu_check.md     one summary: test result line + all benchmark tables.
#
# Usage: benchmarks/gpu_check.sh [OUT_DIR]     (default: $OUT if set, else ./gpu_check_out)
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-gpu_check_out}}"
mkdir -p "$OUT_DIR"
unset TRITON_INTERPRET                      # real compilation, not the CPU interpreter
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export TRITON_DEFAULT_FP_FUSION="${TRITON_DEFAULT_FP_FUSION:-1}"   # silence triton 3.9's notice
T0=$(date +%s)

{
  echo "## nvidia-smi"; nvidia-smi 2>&1 | head -20
  echo "## versions"
  python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| triton', triton.__version__); print(torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))"
  python -m pip list 2>/dev/null | grep -i -E "^(torch|triton|pytest|hypothesis|pytest-benchmark) "
  echo "## register / stack use (ptxas) for this GPU's arch"
  ARCH=$(python -c "import torch; a, b = torch.cuda.get_device_capability(0); print(a * 10 + b)")
  timeout 120 python tests/kernels/_compile_check.py --arch "$ARCH"
} > "$OUT_DIR/env.txt" 2>&1

# Own conftest only (the engine's needs transformers) and no repo addopts (pytest-benchmark may be
# absent on the GPU box). Hypothesis tests skip themselves if hypothesis is missing.
timeout 240 python -m pytest -q tests/kernels --confcutdir=tests/kernels -o addopts="-ra" \
  -p no:cacheprovider > "$OUT_DIR/pytest_kernels.log" 2>&1
TEST_RC=$?
T1=$(date +%s)

# Remaining budget for benchmarks: stay under 8 minutes overall.
LEFT=$(( 450 - (T1 - T0) ))
BUDGET=$(( LEFT - 60 )); [ "$BUDGET" -gt 200 ] && BUDGET=200; [ "$BUDGET" -lt 60 ] && BUDGET=60
timeout $(( BUDGET + 60 )) python benchmarks/bench_kernels.py --gpu --out "$OUT_DIR" --budget "$BUDGET" \
  > "$OUT_DIR/bench.log" 2>&1
BENCH_RC=$?
T2=$(date +%s)

{
  echo "# gpu_check summary"
  echo
  echo "- tests/kernels (compiled, no interpreter): exit $TEST_RC, $(( T1 - T0 )) s incl. env — $(tail -n 1 "$OUT_DIR/pytest_kernels.log")"
  echo "- benchmarks: exit $BENCH_RC, $(( T2 - T1 )) s (budget $BUDGET s)"
  echo
  [ -f "$OUT_DIR/gpu_bench.md" ] && cat "$OUT_DIR/gpu_bench.md" || { echo "no gpu_bench.md; bench.log tail:"; tail -n 40 "$OUT_DIR/bench.log"; }
} > "$OUT_DIR/gpu_check.md"
cat "$OUT_DIR/gpu_check.md"
echo "[gpu_check] wrote $OUT_DIR/{env.txt,pytest_kernels.log,bench.log,gpu_bench.md,gpu_bench.json,gpu_check.md} in $(( T2 - T0 )) s"
[ "$TEST_RC" -eq 0 ] && [ "$BENCH_RC" -eq 0 ]
