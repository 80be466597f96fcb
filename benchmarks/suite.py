"""`python -m benchmarks`: run the benchmark suite and regenerate BENCHMARKS.md.

    python -m benchmarks [--data_dir ../shared/data] [--quick] [--only e2e,scaling,parallel,kernels] [--out BENCHMARKS.md]

Sections (each side of a comparison runs in a fresh process, one after the other, so its peak RSS is its
own; the tables report ratios between sides measured in the same run):
  e2e      the embedded SmolLM2 (fp32, CPU), 50% and 60% unstructured and 2:4: engine --schedule reference,
           engine --schedule sequential, the batch-1 re-statement (benchmarks/reference_wanda.py) and the
           floor (one batched forward pass over all blocks); time, mask agreement, perplexity, peak RSS,
           and the goals of the issue as pass/fail
  scaling  random-initialised LLaMA models of 8 and 32 blocks (hidden 1024) in safetensors shards: time
           and peak RSS against depth, engine streaming (default) and --no_stream when the flag exists;
           the same models as GGUF files: the engine's conversion against transformers' whole-model loading
  parallel the embedded SmolLM2's prune stage with 2 ranks × 1 thread under torchrun (gloo) against one process
           with 1 and with 2 threads; mask agreement of the data-parallel runs with one process
  kernels  the CPU table of benchmarks/bench_kernels.py, and where GPU figures come from

Progress goes to stderr. The output file is written atomically; its intro (between the intro markers) and,
with --only, the sections not rerun are kept from the existing file.

main() below is the whole run; the work is in: settings.py (what a run measures with), runner.py (one side
in a child process → Side), measure.py (each section's sides → a record), masks.py (mask agreement of saved
models), goals.py (the issue's goals), render.py + formats.py (records → markdown), machine.py (the
header's facts), document.py (merging into BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path

from benchmarks.document import DEFAULT_INTRO, compose, existing_parts, write_atomic
from benchmarks.machine import machine_info, now
from benchmarks.measure import measure_e2e, measure_kernels, measure_parallel, measure_scaling
from benchmarks.render import header, render_e2e, render_kernels, render_parallel, render_scaling
from benchmarks.runner import engine_supports, progress, run_side
from benchmarks.settings import DEFAULT_DATA_DIR, SECTIONS, Settings, repo_path


def parse_only(value: str | None) -> list[str]:
    if not value:
        return list(SECTIONS)
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"--only {value!r}: choose from {', '.join(SECTIONS)}")
    return [n for n in SECTIONS if n in names]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=None,
                        help="local datasets (wikitext2/wiki.valid.tokens, wiki.test.raw); default ../shared/data "
                             "beside the repository; the builtin corpus when absent")
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke check of the suite itself")
    parser.add_argument("--only", type=parse_only, default=list(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    parser.add_argument("--out", default=None, help="output file (default: BENCHMARKS.md of the repository)")
    parser.add_argument("--gpu_results", default=None, help="an OUT_DIR of benchmarks/gpu_check.sh to include")
    parser.add_argument("--work_dir", default=None, help="where sides write models and logs (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of every side (sets OMP_NUM_THREADS; default: torch's choice, 1 with --quick)")
    parser.add_argument("--json", default=None, help="also write the raw measurements (every side, every field) here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, reports, saved e2e models)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # --quick runs tiny shapes, where a second torch thread costs more in synchronisation than it gains
    # (SmolLM2 floor at 4x64 tokens: 0.7 s with 1 thread, 5.3 s with 2 on the shared 2-core VM).
    threads = args.threads or (1 if args.quick else None)
    out = repo_path(args.out, "BENCHMARKS.md")
    data_dir = repo_path(args.data_dir, DEFAULT_DATA_DIR)
    work_dir = Path(args.work_dir).resolve() if args.work_dir else Path(tempfile.mkdtemp(prefix="wanda-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings.make(args.quick, data_dir, work_dir, threads)
    started, t0 = now(), time.perf_counter()
    progress(f"sections {','.join(args.only)}; data_dir {data_dir} ({'present' if data_dir.is_dir() else 'absent: builtin corpus'}); "
             f"work dir {work_dir}; quick={args.quick}")
    info = machine_info()
    intro, sections = existing_parts(out)
    raw: dict = {"machine": info, "quick": args.quick}
    failed: list[str] = []
    try:
        baseline = run_side(settings, work_dir / "baseline", "baseline (imports only)", "baseline", "baseline", [])
        baseline_rss = baseline.peak_rss_mb if baseline.available else None
        has_no_stream = engine_supports("--no_stream", settings.threads)
        progress(f"engine --no_stream flag: {'present' if has_no_stream else 'absent'}")
        for name in args.only:
            try:
                if name == "e2e":
                    measured = measure_e2e(settings)
                    raw[name] = measured
                    sections[name] = render_e2e(measured, baseline_rss)
                elif name == "scaling":
                    measured = measure_scaling(settings, has_no_stream)
                    raw[name] = measured
                    sections[name] = render_scaling(measured, baseline_rss)
                elif name == "parallel":
                    measured = measure_parallel(settings)
                    raw[name] = measured
                    sections[name] = render_parallel(measured)
                else:
                    gpu_results = repo_path(args.gpu_results, "") if args.gpu_results else None
                    sections[name] = render_kernels(measure_kernels(settings), gpu_results)
            except Exception as exc:  # noqa: BLE001 — one failed section must not lose the others
                failed.append(name)
                progress(f"{name}: FAILED: {type(exc).__name__}: {exc}")
                sections[name] = f"## {name}\n\nThis section failed in the run of {now()}: `{type(exc).__name__}: {exc}`."
    finally:
        keep = args.keep or args.work_dir is not None or bool(failed)
        if not keep:
            shutil.rmtree(work_dir, ignore_errors=True)
    head = header(info, settings, started, time.perf_counter() - t0, os.getloadavg(), sys.argv[1:] if argv is None else argv)
    write_atomic(out, compose(intro or DEFAULT_INTRO, head, sections))
    if args.json:
        write_atomic(repo_path(args.json, ""), json.dumps(
            {k: asdict(v) if is_dataclass(v) else v for k, v in raw.items()}, indent=1, default=str))
    progress(f"wrote {out} in {(time.perf_counter() - t0) / 60:.1f} min" + (f"; logs kept in {work_dir}" if keep else ""))
    return 1 if failed else 0
