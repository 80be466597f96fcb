"""Running one side of a comparison in a fresh child process, so that its peak RSS (from wait4's rusage) is
its own, and reading back what it measured as a `Side`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.formats import fmt, sparsity_label
from benchmarks.settings import REPO_ROOT, Settings
from wanda_engine.memory import maxrss_mb  # light: no torch import
from wanda_engine.report.types import Report  # light too

_STARTED = time.perf_counter()


def progress(message: str) -> None:
    elapsed = int(time.perf_counter() - _STARTED)
    print(f"[benchmarks +{elapsed // 60:02d}:{elapsed % 60:02d}] {message}", file=sys.stderr, flush=True)


@dataclass
class Child:
    rc: int
    seconds: float
    peak_rss_mb: float | None
    log: Path
    timed_out: bool = False

    def error_line(self) -> str:
        try:
            lines = [line.strip() for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return f"exit {self.rc}"
        for line in reversed(lines):
            if line.startswith("error:"):
                return line
        return lines[-1] if lines else f"exit {self.rc}"


def child_env(threads: int | None = None) -> dict:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env.setdefault("HF_HUB_OFFLINE", "1")
    # The engine's CLI turns torch's huge-page allocation on (see cli.py); every side gets the same allocator.
    env.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_child(cmd: list[str], log: Path, timeout_s: float, threads: int | None = None) -> Child:
    """Run `cmd` in the repository root, output to `log`; its own peak RSS comes from wait4's rusage."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timed_out = False
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, env=child_env(threads))
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() - started > timeout_s:
                    timed_out = True
                    proc.kill()
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.1)
        except BaseException:
            proc.kill()
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Child(proc.returncode, time.perf_counter() - started, maxrss_mb(usage), log, timed_out)


def load_1m() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def shown(cmd: list[str], work_dir: Path, data_dir: Path | None = None) -> str:
    """A command line as someone would type it in the repository root: python, not the interpreter's path
    (torchrun for its module); WORK for the work dir; the data dir relative to the repository."""
    words = []
    for word in cmd:
        if word == sys.executable:
            word = "python"
        word = word.replace(str(work_dir), "WORK")
        if data_dir is not None:
            word = word.replace(str(data_dir), os.path.relpath(data_dir, REPO_ROOT))
        words.append(word)
    return " ".join(words).replace("python -m torch.distributed.run", "torchrun")


def engine_supports(flag: str, threads: int | None = None) -> bool:
    result = subprocess.run(
        [sys.executable, "cli.py", "prune", "--help"], cwd=REPO_ROOT, capture_output=True, text=True,
        env=child_env(threads),
    )
    return flag in result.stdout


# ----------------------------------------------------------------------------- sides


@dataclass
class Side:
    key: str                  # floor, engine_reference, engine_sequential, restatement (+ _nostream)
    label: str
    available: bool = True
    note: str = ""
    prune_s: float | None = None
    peak_rss_mb: float | None = None
    wall_s: float | None = None
    load: float | None = None
    actual_sparsity: float | None = None
    model_dir: Path | None = None
    command: str = ""
    ppl: float | None = None
    agreement: float | None = None
    info: dict = field(default_factory=dict)
    runs_s: list = field(default_factory=list)  # prune stage of every run (e2e repeats), fastest counts


def sparsity_flags(sparsity_type: str, ratio: float | None) -> list[str]:
    return ["--sparsity_type", sparsity_type] + ([] if ratio is None else ["--sparsity_ratio", str(ratio)])


def _run_and_read(
    settings: Settings, cmd: list[str], out: Path, side: Side, result_path: Path, failed_as: str,
    threads: int | None = None,
) -> tuple[Child, dict | None]:
    """Run a side's command (log in `out`) and read the JSON it wrote; None, with `side` marked unavailable
    and the reason said, when it failed or wrote nothing. `threads`: this side's, instead of the run's."""
    child = run_child(cmd, out / "log.txt", settings.timeout_s, threads or settings.threads)
    side.wall_s, side.peak_rss_mb = child.seconds, child.peak_rss_mb
    if child.rc != 0 or not result_path.is_file():
        side.available = False
        side.note = "timed out" if child.timed_out else f"{failed_as}: {child.error_line()}"
        progress(f"{side.label}: {side.note}")
        return child, None
    return child, json.loads(result_path.read_text())


def engine_launcher(ranks: int) -> list[str]:
    """How the engine is started: one process, or `ranks` under torchrun (on one machine)."""
    if ranks == 1:
        return [sys.executable, "cli.py", "prune"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", "cli.py", "prune"]


def run_engine(
    settings: Settings, out: Path, label: str, key: str, *, schedule: str, model: str | None, calibration: str,
    nsamples: int, seqlen: int, sparsity: tuple, extra: list[str] = (), ranks: int = 1, threads: int | None = None,
    batch_size: int | None = None,
) -> Side:
    """The engine's `prune` as one side: `ranks` processes under torchrun (gloo) when more than one, each
    with `threads` torch threads (default: the run's)."""
    cmd = engine_launcher(ranks) + (["--model", model] if model else []) + [
        "--schedule", schedule, *sparsity_flags(*sparsity), "--calibration_dataset", calibration,
        "--nsamples", str(nsamples), "--seqlen", str(seqlen), "--batch_size", str(batch_size or settings.batch_size),
        "--seed", "0", "--dtype", "float32", "--device", "cpu", "--eval", "none", "--no_progress",
        "--save", str(out / "report"), "--save_model", str(out / "model"), *extra,
    ]
    command = shown(cmd, settings.work_dir, settings.data_dir)
    side = Side(key, label, command=f"OMP_NUM_THREADS={threads} {command}" if threads else command, load=load_1m())
    progress(f"{label}: running ({sparsity_label(*sparsity)}) ...")
    child, report = _run_and_read(settings, cmd, out, side, out / "report" / "report.json", "not available", threads)
    if report is None:
        return side
    report = Report.from_json(report)
    side.prune_s = report.timings.get("prune_s")
    side.actual_sparsity = report.actual_sparsity
    side.model_dir = out / "model"
    side.info = {"report_peak_rss_mb": report.peak_rss_mb, "timings": report.timings, "memory": report.memory,
                 "distributed": report.distributed, "calibration_description": report.calibration_description}
    progress(f"{label}: prune {fmt(side.prune_s)} s, peak RSS {fmt(side.peak_rss_mb, 0)} MB ({child.seconds:.0f} s wall)")
    return side


def run_side(settings: Settings, out: Path, label: str, key: str, subcommand: str, args: list[str]) -> Side:
    cmd = [sys.executable, "-m", "benchmarks.sides", subcommand, "--out", str(out), *args]
    side = Side(key, label, command=shown(cmd, settings.work_dir, settings.data_dir), load=load_1m())
    progress(f"{label}: running ...")
    child, result = _run_and_read(settings, cmd, out, side, out / "result.json", "failed")
    if result is None:
        return side
    side.prune_s = result.get("prune_s")
    side.actual_sparsity = result.get("actual_sparsity")
    side.info = result
    if (out / "model").is_dir():
        side.model_dir = out / "model"
    stage = "" if side.prune_s is None else f"prune stage {side.prune_s:.1f} s, "
    progress(f"{label}: {stage}peak RSS {fmt(side.peak_rss_mb, 0)} MB ({child.seconds:.0f} s wall)")
    return side
