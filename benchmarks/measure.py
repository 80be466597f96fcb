"""Measuring each section: which sides run, in which order, on what, and the records they leave (E2EResult,
ScalingResult, KernelsResult) for render.py to turn into tables; every side runs in a child process."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.formats import sparsity_label
from benchmarks.machine import now
from benchmarks.masks import mask_agreement
from benchmarks.runner import Side, progress, run_child, run_engine, run_side, shown, sparsity_flags
from benchmarks.settings import Settings


@dataclass
class E2EResult:
    groups: list  # [(sparsity (type, ratio), {side key: Side})]
    dense_ppl: float | None
    calibration: str  # description
    evaluation: str   # description
    threads: int | None
    nsamples: int
    seqlen: int
    batch_size: int
    commands: list[str]
    measured: str
    repeats: int = 1


def fastest(runs: list[Side]) -> Side:
    """The run with the shortest prune stage, carrying every run's prune stage in `runs_s`; the other
    runs' saved models are deleted (masks are deterministic, so they are the same)."""
    timed = [run for run in runs if run.available and run.prune_s is not None]
    best = min(timed, key=lambda run: run.prune_s) if timed else runs[0]
    best.runs_s = [run.prune_s for run in runs]
    for run in runs:
        if run is not best and run.model_dir is not None:
            shutil.rmtree(run.model_dir, ignore_errors=True)
    return best


def measure_e2e(settings: Settings) -> E2EResult:
    calibration = settings.calibration()
    eval_spec = settings.eval_spec()
    ns, sl = settings.e2e_nsamples, settings.e2e_seqlen
    work = settings.work_dir / "e2e"
    measured = now()
    groups: list[tuple[tuple, dict[str, Side]]] = []
    cal_args = ["--calibration", calibration, "--nsamples", str(ns), "--seqlen", str(sl), *settings.data_dir_arg()]
    for sparsity in settings.sparsities:
        tag = sparsity[0].replace(":", "of") + (f"{sparsity[1]:g}" if sparsity[1] is not None else "")
        progress(f"e2e {sparsity_label(*sparsity)}: floor, engine reference, engine sequential, re-statement")
        runs: dict[str, list[Side]] = {}
        for repeat in range(settings.e2e_repeats):
            sub = f"run{repeat + 1}" if settings.e2e_repeats > 1 else ""
            if settings.e2e_repeats > 1:
                progress(f"e2e {sparsity_label(*sparsity)}: run {repeat + 1} of {settings.e2e_repeats}")
            runs.setdefault("floor", []).append(run_side(
                settings, work / tag / "floor" / sub, "floor", "floor", "floor",
                [*cal_args, "--batch_size", str(settings.batch_size)],
            ))
            for schedule in ("reference", "sequential"):
                runs.setdefault(f"engine_{schedule}", []).append(run_engine(
                    settings, work / tag / f"engine_{schedule}" / sub, f"engine `--schedule {schedule}`",
                    f"engine_{schedule}", schedule=schedule, model=None, calibration=calibration, nsamples=ns,
                    seqlen=sl, sparsity=sparsity,
                ))
            runs.setdefault("restatement", []).append(run_side(
                settings, work / tag / "restatement" / sub, "re-statement (batch 1)", "restatement", "restatement",
                [*cal_args, *sparsity_flags(*sparsity)],
            ))
        sides = {key: fastest(candidates) for key, candidates in runs.items()}
        rs = sides["restatement"]
        for side in sides.values():
            if side.model_dir is not None and rs.model_dir is not None:
                try:
                    same, total = mask_agreement(side.model_dir, rs.model_dir)
                    side.agreement = same / total
                except (OSError, ValueError) as exc:
                    side.note = f"masks not compared: {exc}"
                    progress(f"{side.label}: {side.note}")
        groups.append((sparsity, sides))

    # perplexity: one evaluator process, same windows, every saved model + the dense one
    models = ["embedded"] + [str(s.model_dir) for _, sides in groups for s in sides.values() if s.model_dir]
    progress(f"e2e: perplexity of {len(models)} models ({eval_spec}, {settings.e2e_eval_limit} windows of {sl}) ...")
    eval_json = work / "eval.json"
    eval_cmd = [sys.executable, "-m", "benchmarks.sides", "eval", *models, "--out", str(eval_json), "--eval", eval_spec,
                "--seqlen", str(sl), "--eval_limit", str(settings.e2e_eval_limit),
                "--batch_size", str(settings.batch_size), *settings.data_dir_arg()]
    child = run_child(eval_cmd, work / "eval.log", settings.timeout_s, settings.threads)
    ppl: dict[str, float] = {}
    evaluation = f"{eval_spec} (evaluation failed: {child.error_line()})"
    if child.rc == 0 and eval_json.is_file():
        evaluated = json.loads(eval_json.read_text())
        ppl = {r["model"]: r["ppl"] for r in evaluated["results"]}
        windows = evaluated["results"][0]["windows"] if evaluated["results"] else 0
        evaluation = f"{evaluated['eval']}, first {windows} windows of {sl}"
    progress(f"e2e: perplexity done in {child.seconds:.0f} s")
    for _, sides in groups:
        for side in sides.values():
            if side.model_dir is not None:
                side.ppl = ppl.get(str(side.model_dir))

    infos = [s.info for _, sides in groups for s in sides.values()]
    commands = [f"    # {side.label}\n    {side.command}" for side in (groups[0][1].values() if groups else [])]
    commands.append(f"    # perplexity of the dense and every pruned model\n    {shown(eval_cmd, settings.work_dir, settings.data_dir)}")
    return E2EResult(
        groups=groups, dense_ppl=ppl.get("embedded"),
        calibration=next((i["calibration"] for i in infos if i.get("calibration")), calibration),
        evaluation=evaluation, threads=next((i["threads"] for i in infos if i.get("threads")), None),
        nsamples=ns, seqlen=sl, batch_size=settings.batch_size, commands=commands, measured=measured,
        repeats=settings.e2e_repeats,
    )


@dataclass
class ScalingResult:
    by_depth: dict  # depth → {side key: Side}
    facts: dict     # depth → {"params", "bytes", "shards"}
    shape: dict
    shard_size: str
    nsamples: int
    seqlen: int
    batch_size: int
    has_no_stream: bool
    commands: list[str]
    measured: str
    # depth → {side key: Side} for the GGUF conversions of the same model (empty: not measured)
    conversions: dict = field(default_factory=dict)
    gguf_facts: dict = field(default_factory=dict)  # depth → {"params", "bytes"}
    conversion_commands: list[str] = field(default_factory=list)


# The GGUF sides of the scaling section: the engine's conversion and transformers' whole-model loading.
GGUF_SIDES = (("gguf_convert", "engine GGUF → safetensors conversion (a block at a time)", "gguf-convert"),
              ("gguf_whole", "transformers `from_pretrained(gguf_file=...)` (whole model, fp32)", "gguf-whole"))


def measure_gguf_conversions(settings: Settings, out: Path, depth: int) -> tuple[dict, dict, list[str]]:
    """The model shape of the scaling section written as a GGUF file, then converted by each GGUF side."""
    gguf = out / "model.gguf"
    make_cmd = [sys.executable, "-m", "benchmarks.sides", "random-gguf", "--out", str(gguf), "--layers", str(depth),
                *[f"--{k}={v}" for k, v in settings.model_shape.items()]]
    progress(f"scaling: random LLaMA GGUF with {depth} blocks ...")
    child = run_child(make_cmd, out / "make_gguf.log", settings.timeout_s, settings.threads)
    if child.rc != 0:
        raise RuntimeError(f"writing the {depth}-block GGUF failed: {child.error_line()}")
    facts = json.loads(gguf.with_suffix(".json").read_text())
    sides = {}
    for key, label, subcommand in GGUF_SIDES:
        sides[key] = run_side(settings, out / key, label, key, subcommand, ["--gguf", str(gguf)])
        shutil.rmtree(out / key / "model", ignore_errors=True)
    commands = [f"    {shown(make_cmd, settings.work_dir)}"] + [f"    # {s.label}\n    {s.command}" for s in sides.values()]
    return sides, facts, commands


def measure_scaling(settings: Settings, has_no_stream: bool) -> ScalingResult:
    work = settings.work_dir / "scaling"
    shape = settings.model_shape
    sparsity = ("unstructured", 0.5)
    measured = now()
    variants: list[tuple[str, str, str, list[str]]] = []  # key, label, schedule, extra flags
    for schedule in ("reference", "sequential"):
        if has_no_stream:
            variants.append((f"engine_{schedule}", f"engine `--schedule {schedule}` (streaming, default)", schedule, []))
            variants.append((f"engine_{schedule}_nostream", f"engine `--schedule {schedule} --no_stream`", schedule, ["--no_stream"]))
        else:
            variants.append((f"engine_{schedule}", f"engine `--schedule {schedule}`", schedule, []))
    by_depth: dict[int, dict[str, Side]] = {}
    facts: dict[int, dict] = {}
    commands: list[str] = []
    conversions: dict[int, dict[str, Side]] = {}
    gguf_facts: dict[int, dict] = {}
    conversion_commands: list[str] = []
    for depth in settings.depths:
        out = work / f"llama{depth}"
        model_dir = out / "model"
        progress(f"scaling: random LLaMA with {depth} blocks ...")
        make_cmd = [sys.executable, "-m", "benchmarks.sides", "random-model", "--out", str(model_dir),
                    "--layers", str(depth), "--shard_size", settings.shard_size,
                    *[f"--{k}={v}" for k, v in shape.items()]]
        child = run_child(make_cmd, out / "make.log", settings.timeout_s, settings.threads)
        if child.rc != 0:
            raise RuntimeError(f"building the {depth}-block model failed: {child.error_line()}")
        facts[depth] = json.loads((model_dir / "benchmark_model.json").read_text())
        cal_args = ["--model", str(model_dir), "--calibration", "builtin", "--nsamples", str(settings.scaling_nsamples),
                    "--seqlen", str(settings.scaling_seqlen)]
        sides: dict[str, Side] = {}
        sides["floor"] = run_side(settings, out / "floor", "floor", "floor", "floor",
                                  [*cal_args, "--batch_size", str(settings.batch_size)])
        for key, label, schedule, extra in variants:
            sides[key] = run_engine(
                settings, out / key, label, key, schedule=schedule, model=str(model_dir), calibration="builtin",
                nsamples=settings.scaling_nsamples, seqlen=settings.scaling_seqlen, sparsity=sparsity, extra=extra,
            )
            shutil.rmtree(out / key / "model", ignore_errors=True)
        sides["restatement"] = run_side(settings, out / "restatement", "re-statement (batch 1)", "restatement",
                                        "restatement", [*cal_args, *sparsity_flags(*sparsity)])
        shutil.rmtree(out / "restatement" / "model", ignore_errors=True)
        if depth == settings.depths[-1]:
            commands = [f"    {shown(make_cmd, settings.work_dir)}"] + [
                f"    # {s.label}\n    {s.command}" for s in sides.values()
            ]
        shutil.rmtree(model_dir, ignore_errors=True)
        by_depth[depth] = sides
        try:
            conversions[depth], gguf_facts[depth], conversion_commands = measure_gguf_conversions(settings, out, depth)
        except Exception as exc:  # noqa: BLE001 - the streaming results above stand without it
            progress(f"scaling: GGUF conversion at {depth} blocks not measured: {exc}")
        finally:
            (out / "model.gguf").unlink(missing_ok=True)
    return ScalingResult(
        by_depth=by_depth, facts=facts, shape=dict(shape), shard_size=settings.shard_size,
        nsamples=settings.scaling_nsamples, seqlen=settings.scaling_seqlen, batch_size=settings.batch_size,
        has_no_stream=has_no_stream, commands=commands, measured=measured,
        conversions=conversions, gguf_facts=gguf_facts, conversion_commands=conversion_commands,
    )


@dataclass
class ParallelResult:
    layouts: dict  # "RxT" (R ranks × T threads) → Side: the prune stage of one sparsity, fastest run
    agreement: list  # (what is compared, identical mask entries / entries or None, note)
    ranks: int
    calibration: str  # description
    nsamples: int
    seqlen: int
    batch_size: int
    repeats: int
    commands: list[str]
    measured: str


def _agreement(a: Side, b: Side) -> tuple[float | None, str]:
    if a.model_dir is None or b.model_dir is None:
        return None, a.note or b.note or "no saved model"
    try:
        same, total = mask_agreement(a.model_dir, b.model_dir)
    except (OSError, ValueError) as exc:
        return None, f"masks not compared: {exc}"
    return same / total, f"{total - same:,} of {total:,} entries differ"


def measure_parallel(settings: Settings) -> ParallelResult:
    """The prune stage of the embedded SmolLM2 with R ranks × 1 thread (torchrun, gloo) against one process
    with 1 thread and with R threads, the layouts taking turns; then the masks of R ranks against one
    process for the other schedule and an N:M sparsity."""
    calibration, ns, sl, ranks = settings.calibration(), settings.e2e_nsamples, settings.e2e_seqlen, settings.parallel_ranks
    work = settings.work_dir / "parallel"
    measured = now()
    layouts = [("1x1", 1, 1), (f"1x{ranks}", 1, ranks), (f"{ranks}x1", ranks, 1)]
    sparsity = ("unstructured", 0.5)
    batch_size = min(settings.batch_size, max(1, ns // ranks))  # every rank needs a batch (--quick: 4 samples)

    def engine(out: Path, key: str, n_ranks: int, threads: int, schedule: str, sparsity: tuple) -> Side:
        label = f"{n_ranks} rank{'s' if n_ranks > 1 else ''} × {threads} thread{'s' if threads > 1 else ''}"
        return run_engine(settings, out, label, key, schedule=schedule, model=None, calibration=calibration,
                          nsamples=ns, seqlen=sl, sparsity=sparsity, ranks=n_ranks, threads=threads, batch_size=batch_size)

    runs: dict[str, list[Side]] = {}
    for repeat in range(settings.parallel_repeats):
        progress(f"parallel: run {repeat + 1} of {settings.parallel_repeats} of {', '.join(k for k, _, _ in layouts)}")
        for key, n_ranks, threads in layouts:
            runs.setdefault(key, []).append(engine(work / key / f"run{repeat + 1}", key, n_ranks, threads, "reference", sparsity))
    sides = {key: fastest(candidates) for key, candidates in runs.items()}
    single, parallel = sides["1x1"], sides[f"{ranks}x1"]
    agreement = [(f"reference, {sparsity_label(*sparsity)}: {ranks} ranks × 1 thread vs 1 × 1", *_agreement(parallel, single)),
                 (f"reference, {sparsity_label(*sparsity)}: 1 rank × {ranks} threads vs 1 × 1",
                  *_agreement(sides[f"1x{ranks}"], single))]
    for schedule, other in (("reference", ("2:4", None)), ("sequential", sparsity)):
        tag = f"{schedule}-{other[0].replace(':', 'of')}"
        progress(f"parallel: masks of {schedule} {sparsity_label(*other)}, 1 process and {ranks} ranks")
        one = engine(work / tag / "1x1", "1x1", 1, 1, schedule, other)
        many = engine(work / tag / f"{ranks}x1", f"{ranks}x1", ranks, 1, schedule, other)
        agreement.append((f"{schedule}, {sparsity_label(*other)}: {ranks} ranks × 1 thread vs 1 × 1", *_agreement(many, one)))
        for side in (one, many):
            if side.model_dir is not None:
                shutil.rmtree(side.model_dir, ignore_errors=True)
    description = next((s.info.get("calibration_description") for s in sides.values() if s.info.get("calibration_description")),
                       calibration)
    return ParallelResult(
        layouts=sides, agreement=agreement, ranks=ranks, calibration=description, nsamples=ns, seqlen=sl,
        batch_size=batch_size, repeats=settings.parallel_repeats,
        commands=[f"    # {side.label}\n    {side.command}" for side in sides.values()], measured=measured,
    )


@dataclass
class KernelsResult:
    body: str      # the CPU table of bench_kernels.py, or why there is none
    info: str      # its "torch ..." line
    command: str
    measured: str


def measure_kernels(settings: Settings) -> KernelsResult:
    cmd = [sys.executable, "benchmarks/bench_kernels.py", *settings.kernel_args]
    progress("kernels: benchmarks/bench_kernels.py (CPU) ...")
    log = settings.work_dir / "kernels.log"
    child = run_child(cmd, log, settings.timeout_s, settings.threads)
    output = log.read_text(errors="replace").strip()
    table_lines = [line for line in output.splitlines() if line.startswith("|")]
    info = next((line for line in output.splitlines() if line.startswith("torch ")), "")
    progress(f"kernels: done in {child.seconds:.0f} s")
    if child.rc != 0 or not table_lines:
        body = f"bench_kernels.py failed (exit {child.rc}): {child.error_line()}"
    else:
        body = "\n".join(table_lines)
    return KernelsResult(body=body, info=info, command=" ".join(["python", *cmd[1:]]), measured=now())
