"""BENCHMARKS.md's sections from the measured records: tables, the goals' verdicts and the prose around them.
No measuring here, so the tables can be tested on made-up records."""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path

from benchmarks.formats import fmt, md_table, ratio, secs, sparsity_label
from benchmarks.goals import RSS_BUDGET_FACTOR, Goal, evaluate_goals, growth_goals, rss_budget_mb
from benchmarks.measure import E2EResult, KernelsResult, ParallelResult, ScalingResult
from benchmarks.settings import Settings


def _status(goal: Goal) -> str:
    if goal.status == "pass":
        return f"pass ({goal.value})"
    if goal.status == "FAIL":
        return f"**FAIL** ({goal.value})"
    return f"n/a ({goal.value})"


def _budget_note(result: E2EResult, baseline_rss: float | None) -> str:
    """How the memory goal's budget is made up, from the first engine side's report."""
    side = next((s for _, sides in result.groups for s in sides.values() if s.info.get("memory")), None)
    budget = rss_budget_mb(side, baseline_rss)
    if budget is None:
        return "Memory budget: not computed (no report.json `memory` or no import-only baseline)."
    memory = side.info["memory"]
    return (
        f"Memory budget of the peak-RSS goal: {RSS_BUDGET_FACTOR:g} × ({memory.block_weights_mb:.1f} MB of one block's "
        f"weights + {memory.hidden_states_mb:.1f} MB of calibration hidden states ({result.nsamples} × {result.seqlen} × "
        f"hidden, one copy) + {memory.embeddings_mb:.1f} MB of embeddings"
        + (f" + {memory.lm_head_mb:.1f} MB of untied lm_head" if memory.lm_head_mb else "")
        + f" + {baseline_rss:.0f} MB import-only "
        f"baseline) = {budget:.0f} MB; sizes from the engine's report.json `memory`."
    )


def render_e2e(result: E2EResult, baseline_rss: float | None) -> str:
    header = ["sparsity", "side", "prune s", "runs s", "× floor", "speed-up vs re-statement", "identical mask entries",
              "actual sparsity", "ppl", "ppl / re-statement", "peak RSS MB", "load"]
    rows = []
    for sparsity, sides in result.groups:
        floor, rs = sides.get("floor"), sides.get("restatement")
        floor_s = floor.prune_s if floor else None
        rs_s, rs_ppl = (rs.prune_s, rs.ppl) if rs else (None, None)
        for side in sides.values():
            name = sparsity_label(*sparsity)
            runs = ", ".join(secs(x) for x in side.runs_s if x is not None)
            if not side.available:
                rows.append([name, side.label, side.note] + [""] * 8 + [fmt(side.load, 1)])
            elif side.key == "floor":
                rows.append([name, side.label, secs(side.prune_s), runs, ratio(side.prune_s, floor_s), "", "", "",
                             f"{fmt(result.dense_ppl, 3)} (dense)", "", fmt(side.peak_rss_mb, 0), fmt(side.load, 1)])
            else:
                rows.append([
                    name, side.label, secs(side.prune_s), runs, ratio(side.prune_s, floor_s),
                    "" if side.key == "restatement" else ratio(rs_s, side.prune_s),
                    side.note if side.agreement is None and side.note else
                    fmt(None if side.agreement is None else side.agreement * 100, 4, "%"),
                    fmt(side.actual_sparsity, 4), fmt(side.ppl, 3),
                    "" if side.key == "restatement" else ratio(side.ppl, rs_ppl, "{:.4f}"),
                    fmt(side.peak_rss_mb, 0), fmt(side.load, 1),
                ])
    per_sparsity = [(sparsity, evaluate_goals(sides, baseline_rss)) for sparsity, sides in result.groups]
    goal_rows = []
    if per_sparsity:
        for i, goal in enumerate(per_sparsity[0][1]):
            goal_rows.append([goal.text] + [_status(goals[i]) for _, goals in per_sparsity])
    goal_header = ["goal"] + [sparsity_label(*s) for s, _ in per_sparsity]
    baseline = (f" A process that only imports torch, transformers and the engine peaks at {baseline_rss:.0f} MB RSS."
                if baseline_rss else "")
    parts = [
        "## End to end: SmolLM2-135M-Instruct (embedded), fp32, CPU",
        "",
        f"Measured {result.measured}; torch threads: {result.threads or '?'}; calibration: {result.calibration} "
        f"(the same {result.nsamples} windows of {result.seqlen} tokens for every side, batch {result.batch_size} "
        f"where batched); evaluation: {result.evaluation}.{baseline}"
        + (f" Every side ran {result.repeats} times, the sides taking turns; `prune s` (and the rest of the row) is "
           f"its fastest run, `runs s` lists all of them." if result.repeats > 1 else ""),
        "",
        md_table(header, rows, ["---", "---", "---:", "---"] + ["---:"] * 8),
        "",
        "Goals (from the issue), checked on this run's ratios:",
        "",
        md_table(goal_header, goal_rows),
        "",
        _budget_note(result, baseline_rss),
        "",
        "The engine runs in its default mode with `--eval none`, so that its peak RSS is the pruning run's; every "
        "perplexity above comes from the one evaluator process on the saved weights. The first sparsity's commands "
        "(WORK = a temporary work folder; the other sparsities differ only in the sparsity flags):",
        "",
        "\n".join(result.commands),
    ]
    return "\n".join(parts)


def render_scaling(result: ScalingResult, baseline_rss: float | None) -> str:
    by_depth, facts, shape = result.by_depth, result.facts, result.shape
    depths = sorted(by_depth)
    first, last = depths[0], depths[-1]
    keys = list(by_depth[first].keys())

    def ref_time(depth: int, key: str) -> float | None:
        side = by_depth[depth].get(key)
        return side.prune_s if side is not None and side.available else None

    time_header = ["side"]
    for d in depths:
        time_header += [f"{d} blocks: prune s", "× floor", "speed-up vs re-statement", "load"]
    time_rows, rss_rows = [], []
    for key in keys:
        row = [by_depth[first][key].label]
        for d in depths:
            side = by_depth[d][key]
            if not side.available:
                row += [side.note, "", "", fmt(side.load, 1)]
                continue
            row += [secs(side.prune_s), ratio(side.prune_s, ref_time(d, "floor")),
                    "" if key in ("floor", "restatement") else ratio(ref_time(d, "restatement"), side.prune_s),
                    fmt(side.load, 1)]
        time_rows.append(row)
        rss = [by_depth[d][key].peak_rss_mb if by_depth[d][key].available else None for d in depths]
        row = [by_depth[first][key].label] + [fmt(r, 0) for r in rss]
        a, b = rss[0], rss[-1]
        if a is not None and b is not None and last > first:
            row += [f"{b - a:+.0f} MB ({b / a:.2f}×)", f"{(b - a) / (last - first):+.1f}"]
        else:
            row += ["–", "–"]
        rss_rows.append(row)
    rss_header = ["side"] + [f"{d} blocks: peak RSS MB" for d in depths] + [f"growth {first}→{last} blocks", "MB per added block"]
    model_lines = [
        f"- {d} blocks: {facts[d]['params'] / 1e6:.0f}M parameters, {facts[d]['bytes'] / 2**20:.0f} MB of fp32 weights "
        f"in {len(facts[d]['shards'])} safetensors shards" for d in depths
    ]
    block_mb = (facts[last]["bytes"] - facts[first]["bytes"]) / max(last - first, 1) / 2**20
    stream_note = (
        "The engine ran in its default mode (streaming blocks from the shards) and with `--no_stream` (whole model "
        "in memory)." if result.has_no_stream else
        "`python cli.py prune --help` has no `--no_stream` flag in this tree, so the engine ran in its only mode."
    )
    parts = [
        f"## Scaling with depth: random-initialised LLaMA, hidden {shape['hidden']}, fp32, CPU",
        "",
        f"Measured {result.measured}. {shape['heads']} heads, {shape['kv_heads']} KV heads, intermediate "
        f"{shape['intermediate']}, vocab {shape['vocab']}, untied embeddings, saved with "
        f"`save_pretrained(max_shard_size=\"{result.shard_size}\")` plus the tests' byte-level tokenizer; calibration: "
        f"built-in corpus, {result.nsamples} windows of {result.seqlen} tokens, batch {result.batch_size}; 50% "
        f"unstructured; no evaluation. Every pruning side saves the pruned model (its peak RSS includes that). {stream_note}",
        "",
        *model_lines,
        f"- one block = {block_mb:.1f} MB of fp32 weights"
        + (f"; a process that only imports the libraries peaks at {baseline_rss:.0f} MB" if baseline_rss else ""),
        "",
        "Prune stage against depth:",
        "",
        md_table(time_header, time_rows, numbers=True),
        "",
        f"Peak RSS against depth (a side that holds the whole model grows by about one block's {block_mb:.1f} MB per "
        "added block; a streaming one should stay nearly flat):",
        "",
        md_table(rss_header, rss_rows, numbers=True),
        "",
        *growth_goals(by_depth, first, last),
        f"Commands ({last} blocks; WORK = a temporary work folder):",
        "",
        "\n".join(result.commands),
        *render_conversions(result),
    ]
    return "\n".join(parts)


def render_conversions(result: ScalingResult) -> list[str]:
    """The GGUF conversion table of the scaling section (nothing when it was not measured)."""
    conversions, facts = result.conversions, result.gguf_facts
    if not conversions:
        return []
    depths = sorted(conversions)
    first, last = depths[0], depths[-1]
    header = ["side"] + [f"{d} blocks: {what}" for d in depths for what in ("s", "peak RSS MB")] + [f"RSS growth {first}→{last}"]
    rows = []
    for key in conversions[first]:
        row = [conversions[first][key].label]
        for d in depths:
            side = conversions[d][key]
            row += [fmt(side.info.get("seconds"), 1), fmt(side.peak_rss_mb, 0)] if side.available else [side.note, ""]
        a, b = (conversions[d][key].peak_rss_mb if conversions[d][key].available else None for d in (first, last))
        row.append(f"{b - a:+.0f} MB ({b / a:.2f}×)" if a and b and last > first else "–")
        rows.append(row)
    return [
        "",
        "### GGUF sources: conversion against depth",
        "",
        "The same model shapes written as GGUF files (`benchmarks.sides random-gguf`: Q8_0 matrices, F16 v_proj, F32 "
        "norms, llama.cpp's tensor names and layout), converted to float32 safetensors as a GGUF `--model` is on "
        "first use (the engine runs the conversion in a child process), against what transformers' own GGUF loading "
        "holds. Each side ran in its own process; the conversion writes its output, the whole-model load does not.",
        "",
        *[f"- {d} blocks: {facts[d]['params'] / 1e6:.0f}M parameters, GGUF file {facts[d]['bytes'] / 2**20:.0f} MB"
          for d in depths],
        "",
        md_table(header, rows, numbers=True),
        "",
        f"Commands ({last} blocks):",
        "",
        "\n".join(result.conversion_commands),
    ]


# The goal of the data-parallel issue: R ranks × 1 thread against 1 rank × 1 thread, prune stage.
PARALLEL_SPEEDUP_GOAL = 1.7


def exchange_per_block(hidden: int, intermediate: int, kv_dim: int, nsamples: int, batch_size: int) -> dict:
    """What the ranks exchange per LLaMA block in a data-parallel run, in bytes: the statistic's fold
    vectors (fp32, one per sample on the torch path, one per batch where the Triton kernel sums a batch;
    the 4 distinct linear inputs: attention, o_proj, MLP, down_proj) and the masks rank 0 broadcasts (one
    byte per weight); and the block's weights, for the GEMM time."""
    inputs = 3 * hidden + intermediate
    weights = 2 * hidden * hidden + 2 * kv_dim * hidden + 3 * hidden * intermediate
    return {"per_sample": nsamples * inputs * 4, "per_batch": -(-nsamples // batch_size) * inputs * 4,
            "masks": weights, "weights": weights, "sum_allreduce": inputs * 4}


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.1f} MB" if nbytes >= 1e5 else f"{nbytes / 1e3:.0f} kB"


def _gpu_node_paragraph(result: ParallelResult) -> str:
    smol = exchange_per_block(576, 1536, 192, result.nsamples, result.batch_size)
    big = exchange_per_block(8192, 28672, 1024, 128, 8)  # Llama-2-70B, 128 × 2048 calibration, batch 8
    tokens, ranks = 128 * 2048, 8
    flops = 4 * big["weights"] * tokens / ranks  # two passes (statistics, outputs) of 2 flops per weight and token
    gemm_s = flops / 400e12  # at 400 TFLOP/s sustained (bf16/fp16 GEMMs on an H100-class GPU)
    broadcast_s = big["masks"] / 150e9  # NCCL broadcast at ~150 GB/s inside an NVLink node
    return (
        "What is exchanged, per block (arithmetic, not measured). Combining the statistic exactly means gathering the "
        "folds the single process makes, not all-reducing one sum per column (which would be "
        f"{_mb(smol['sum_allreduce'])} per SmolLM2 block, `in_features` floats per linear group, but rounds "
        "differently, DESIGN.md §3b): SmolLM2 at "
        f"{result.nsamples} samples, {_mb(smol['per_sample'])} per block on the CPU path (a vector per sample), "
        f"{_mb(smol['per_batch'])} on the GPU path (the Triton kernel folds a vector per batch); the masks, each "
        f"broadcast by the rank that selected it, are {_mb(smol['masks'])} per block (a byte per weight). Llama-2-70B at 128 × 2048, batch 8, "
        f"on one node of {ranks} GPUs: {_mb(big['per_batch'])} of statistic and {_mb(big['masks'])} of masks per "
        f"block, about {broadcast_s * 1e3:.0f} ms of NCCL broadcast at ~150 GB/s, against about "
        f"{gemm_s * 1e3:.0f} ms of GEMMs per block and GPU (two passes over {tokens // ranks:,} tokens of a "
        f"{big['weights'] / 1e9:.2f} B-weight block at 400 TFLOP/s): communication stays a few percent of the block "
        f"time, and the {ranks}-way split of the samples divides the rest. Across machines (~50 GB/s per node) the "
        f"mask broadcast grows to ~{big['masks'] / 50e9 * 1e3:.0f} ms per block; sending the masks as bits would "
        "cut it 8×. Loading is not divided: every rank reads every block (from its own copy or a shared file system)."
    )


def render_parallel(result: ParallelResult) -> str:
    single = result.layouts.get("1x1")
    many = result.layouts.get(f"{result.ranks}x1")
    rows = []
    for key, side in result.layouts.items():
        runs = ", ".join(secs(x) for x in side.runs_s if x is not None)
        parallel = side.info.get("distributed")
        per_rank = ", ".join(f"{rank.peak_rss_mb:.0f}" for rank in parallel.ranks) if parallel else fmt(side.peak_rss_mb, 0)
        if not side.available:
            rows.append([side.label, side.note, "", "", "", fmt(side.load, 1)])
        else:
            rows.append([side.label, secs(side.prune_s), runs, ratio(single.prune_s if single else None, side.prune_s),
                         per_rank, fmt(side.load, 1)])
    speedup_ok = (single is not None and many is not None and single.prune_s is not None and many.prune_s is not None)
    if speedup_ok:
        value = single.prune_s / many.prune_s
        goal = _status(Goal("", "pass" if value >= PARALLEL_SPEEDUP_GOAL else "FAIL", f"{value:.2f}×"))
    else:
        goal = "n/a (not measured)"
    agreement_rows = [[what, fmt(None if fraction is None else fraction * 100, 4, "%"), note]
                      for what, fraction, note in result.agreement]
    parts = [
        "## Data parallel: SmolLM2-135M-Instruct (embedded), fp32, CPU, torchrun + gloo",
        "",
        f"Measured {result.measured}; calibration: {result.calibration}; {result.nsamples} × {result.seqlen} tokens, "
        f"batch {result.batch_size}, 50% unstructured Wanda, `--schedule reference`, `--eval none`. "
        f"`R ranks × T threads`: `torchrun --standalone --nproc_per_node R` with OMP_NUM_THREADS=T (torchrun's own "
        f"default), against one process with 1 and with {result.ranks} threads (torch's default here). "
        + (f"Every layout ran {result.repeats} times, the layouts taking turns; `prune s` is its fastest run "
           f"(rank 0's `timings.prune_s`, waits for the other ranks included), `runs s` lists all of them. "
           if result.repeats > 1 else "")
        + "Peak RSS is per rank, from report.json `distributed`.",
        "",
        md_table(["layout", "prune s", "runs s", "speed-up vs 1 × 1", "peak RSS MB per rank", "load"],
                 [row for row in rows], ["---", "---:", "---", "---:", "---:", "---:"]),
        "",
        f"Goal (from the issue): {result.ranks} ranks × 1 thread ≥ {PARALLEL_SPEEDUP_GOAL:g}× faster than 1 rank × 1 "
        f"thread: {goal}.",
        "",
        "Masks, compared entry by entry on the saved weights (the data-parallel run gathers the statistic's folds "
        "and folds them in the single process's order, and each mask is selected by one rank and broadcast, so they "
        "should be identical):",
        "",
        md_table(["compared", "identical mask entries", ""], agreement_rows, ["---", "---:", "---"]),
        "",
        _gpu_node_paragraph(result),
        "",
        "Commands (WORK = a temporary work folder):",
        "",
        "\n".join(result.commands),
    ]
    return "\n".join(parts)


def render_kernels(result: KernelsResult, gpu_results: Path | None) -> str:
    gpu = [
        "### GPU",
        "",
        "GPU figures come from `benchmarks/gpu_check.sh [OUT_DIR]` (one CUDA GPU, about 6–8 minutes): it runs",
        "`tests/kernels` compiled for the device (no interpreter) and `python benchmarks/bench_kernels.py --gpu`,",
        "writing `gpu_check.md` / `gpu_bench.json` to OUT_DIR: the mask kernel's time and GB/s against the",
        "measured copy bandwidth for every LLaMA-2 7B/13B/70B linear shape (fp16, bf16), next to the torch fast",
        "path and the reference sort on the same GPU; `linear_with_sq_norms` against `F.linear` + a separate",
        "reduction and the reference hook; N:M 2:4; a block/radix sweep. `python -m benchmarks --gpu_results",
        "OUT_DIR` puts its `gpu_check.md` below.",
        "",
    ]
    gpu_file = None
    if gpu_results is not None:
        for candidate in (gpu_results / "gpu_check.md", gpu_results / "gpu_bench.md", gpu_results):
            if candidate.is_file():
                gpu_file = candidate
                break
    if gpu_file is not None:
        text = gpu_file.read_text(errors="replace").strip()
        text = re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + 3) + " ", text, flags=re.M)  # nest its headings
        gpu += [f"From `{gpu_file.name}` (modified {_dt.datetime.fromtimestamp(gpu_file.stat().st_mtime):%Y-%m-%d %H:%M}):", "", text]
    else:
        gpu += ["No GPU results are included in this file (none were given with `--gpu_results`)."]
    parts = [
        "## Kernels",
        "",
        "### CPU: `wanda_mask` torch fast path vs the reference's full sort",
        "",
        f"Measured {result.measured}: `{result.command}` ({result.info or 'see the command'}). Same mask bit for bit (the script asserts "
        "`torch.equal` with the stable-sort oracle). The reference ranks each row with `torch.sort(score, "
        "stable=True)`; the fast path takes the per-row threshold from a partial selection (`torch.topk` of the "
        "smaller side) and ranks only the ties at the threshold. Times (ms, minimum over rounds) include the "
        "fp32 score and the NaN/inf check.",
        "",
        result.body,
        "",
        "The same comparison as a pytest-benchmark suite: `BENCH_THREADS=1 python -m pytest benchmarks/bench_kernels.py "
        "--benchmark-enable --benchmark-group-by=group --benchmark-columns=min,median,rounds -q`.",
        "",
        *gpu,
    ]
    return "\n".join(parts)


def header(info: dict, settings: Settings, started: str, seconds: float, load: tuple, argv: list[str]) -> str:
    ram = f"{info['ram_gib']:.0f} GiB RAM" if info["ram_gib"] else "RAM unknown"
    cmd = "python -m benchmarks --data_dir ../shared/data"
    run_cmd = " ".join(["python -m benchmarks", *argv])
    return "\n".join([
        "## This run",
        "",
        f"- machine: {info['cpu']}, {info['cores']} logical cores, {ram}; {info['os']}; "
        + (f"sides ran with {settings.threads} torch thread(s) (OMP_NUM_THREADS)" if settings.threads
           else f"sides ran with torch's default of {info['threads']} threads"),
        f"- versions: python {info['python']}, torch {info['torch']}, triton {info['triton']}, "
        f"transformers {info['transformers']}; wanda-engine at {info['commit']}",
        f"- date: {started}; the suite took {seconds / 60:.1f} min; load average (1/5/15 min) at the end "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}" + (" — **--quick settings: smoke check only, not figures to quote**" if settings.quick else ""),
        f"- this file came from: `{run_cmd}`",
        "",
        "Regenerate (from the repository root; each section can be rerun alone with `--only`, the others are kept):",
        "",
        "```bash",
        f"{cmd}                      # everything (the full settings take a while: see each section)",
        f"{cmd} --only e2e,scaling   # or any subset of e2e, scaling, parallel, kernels",
        "python -m benchmarks --quick --out /tmp/BENCHMARKS.quick.md            # smoke check, tiny settings",
        "python -m pytest benchmarks/bench_end_to_end.py --benchmark-enable      # prune stage, tiny model, pytest-benchmark",
        "python -m pytest benchmarks/bench_kernels.py --benchmark-enable --benchmark-group-by=group",
        "benchmarks/gpu_check.sh OUT_DIR && python -m benchmarks --only kernels --gpu_results OUT_DIR   # on a GPU",
        "```",
    ])
