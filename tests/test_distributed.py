"""Data-parallel pruning on CPU (gloo): torchrun launches of `cli.py prune` on a tiny model give the single
process's masks and perplexities, every sample once, and fail fast and cleanly when a rank fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import kernels
from wanda_engine.api import run_prune
from wanda_engine.distributed import (
    DataParallel, GatheredSqNorms, Launch, Stopped, owners_by_size, shares, stopped_by_sigterm,
)
from wanda_engine.errors import UserError

from model_helpers import saved_weights, tiny_run_config

ROOT = Path(__file__).resolve().parents[1]
# A failing rank must take the launch down well within this (gloo notices a dead peer at once; torchrun
# stops the survivors within seconds); a hang would run into the collective timeout given below.
BOUNDED_S = 90


def torchrun(args: list[str], nproc: int = 2, fault: str | None = None, script: str = "cli.py",
             timeout: float = 240) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WANDA_TEST_FAULT", None)
    if fault:
        env["WANDA_TEST_FAULT"] = fault
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(ROOT / script), "prune", *args, "--dist_timeout", "120"]
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return done, time.monotonic() - started


def single(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), "prune", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)


def run_args(model_dir: str, text_file: str, out: Path, *extra: str) -> list[str]:
    """A quick run of the tiny model: 7 samples in batches of 2 (4 batches: uneven shares of samples)."""
    return ["--model", model_dir, "--calibration_dataset", text_file, "--eval", text_file, "--nsamples", "7",
            "--seqlen", "32", "--batch_size", "2", "--eval_limit", "5", "--no_progress", "--cache_dir",
            str(out.parent / "cache"), "--save", str(out / "report"), "--save_model", str(out / "model"), *extra]


def assert_same_masks(single_dir: Path, parallel_dir: Path) -> None:
    expected, got = saved_weights(single_dir / "model"), saved_weights(parallel_dir / "model")
    assert set(expected) == set(got)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name  # pruned entries are exact zeros: the masks too
    report, parallel = (json.loads((d / "report" / "report.json").read_text()) for d in (single_dir, parallel_dir))
    assert parallel["ppl_dense"] == report["ppl_dense"] and parallel["ppl_pruned"] == report["ppl_pruned"]
    assert parallel["per_layer"] == report["per_layer"]


def ok(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-2000:]


# --- shares and the combined statistic ------------------------------------------------------------


@pytest.mark.parametrize("count,parts,unit", [(7, 2, 2), (8, 2, 8), (128, 3, 8), (5, 4, 1), (3, 4, 1), (0, 2, 4), (33, 5, 4)])
def test_shares_cover_every_item_once_in_whole_batches(count, parts, unit):
    got = shares(count, parts, unit)
    assert len(got) == parts
    assert [i for share in got for i in share] == list(range(count))  # contiguous, in rank order, each once
    for share in got:
        if share and share.stop != count:
            assert len(share) % unit == 0  # whole batches: every batch is one the single process runs
    sizes = [-(-len(share) // unit) for share in got]
    assert max(sizes) - min(sizes) <= 1


def _gather_worker(rank: int, init: str, parts: list[torch.Tensor], counts: list[int], split: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        replicas = DataParallel(Launch(rank, 2, rank), "gloo")
        statistic = GatheredSqNorms(parts[0].numel())
        mine = range(split) if rank == 0 else range(split, len(parts))
        for i in mine:
            statistic.fold(parts[i], counts[i])
        mean_sq = replicas.complete(statistic)
        torch.save({"mean_sq": mean_sq, "samples": statistic.samples}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_gathered_statistic_is_the_single_process_fold_bit_for_bit(tmp_path):
    """Per-sample and per-batch folds split unevenly over 2 ranks; summing per-rank means instead
    would differ in the last bits (DESIGN.md 3b)."""
    generator = torch.Generator().manual_seed(0)
    parts = [torch.rand(64, generator=generator) * 10 ** torch.randint(-3, 4, (1,), generator=generator) for _ in range(11)]
    counts = [1, 1, 3, 1, 2, 1, 1, 4, 1, 1, 1]
    expected = kernels.RunningSqNorms(64)
    for part, count in zip(parts, counts):
        expected.fold(part, count)
    mp.spawn(_gather_worker, args=(f"file://{tmp_path}/rendezvous", parts, counts, 7, str(tmp_path / "result")), nprocs=2)
    for rank in range(2):
        result = torch.load(tmp_path / f"result.{rank}")
        assert torch.equal(result["mean_sq"], expected.mean_sq)
        assert result["samples"] == sum(counts)


def test_mask_selection_is_shared_out_by_size():
    # a LLaMA block's linears (q, k, v, o, gate, up, down) on 2 ranks: the three MLP matrices dominate
    sizes = [576 * 576, 192 * 576, 192 * 576, 576 * 576, 1536 * 576, 1536 * 576, 576 * 1536]
    owners = owners_by_size(sizes, 2)
    loads = [sum(size for size, owner in zip(sizes, owners) if owner == rank) for rank in range(2)]
    assert max(loads) / min(loads) < 1.3
    assert owners_by_size([10], 4) == [0]  # one matrix alone: rank 0's
    assert owners_by_size(sizes, 1) == [0] * len(sizes)


def test_sigterm_unwinds_a_rank_once_and_spares_its_clean_up():
    """torchrun's SIGTERM raises Stopped, so the run unwinds and removes its partial outputs; a second
    SIGTERM while it does so is ignored; outside a data-parallel run nothing is installed."""
    import signal

    before = signal.getsignal(signal.SIGTERM)
    cleaned = []
    with pytest.raises(Stopped, match="rank 1 of 2: stopped by SIGTERM"):
        with stopped_by_sigterm(Launch(1, 2, 1)):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises before this ends
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # during the clean-up: ignored
                time.sleep(0.1)
                cleaned.append(True)
    assert cleaned and signal.getsignal(signal.SIGTERM) is before
    with stopped_by_sigterm(Launch()):
        assert signal.getsignal(signal.SIGTERM) is before


def test_launch_from_torchrun_environment():
    assert Launch.from_env({}) == Launch()
    assert Launch.from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == Launch(1, 2, 1)
    with pytest.raises(UserError, match="RANK=2 WORLD_SIZE=2"):
        Launch.from_env({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(UserError, match="WORLD_SIZE='two'"):
        Launch.from_env({"RANK": "0", "WORLD_SIZE": "two"})


# --- whole runs under torchrun ---------------------------------------------------------------------


CASES = {
    "reference": [],
    "reference-2of4-whole-model": ["--sparsity_type", "2:4", "--no_stream"],
    "sequential": ["--schedule", "sequential"],
    "three_tier": ["--sparsity_allocation", "three_tier", "--sparsity_ratio", "0.6"],
    "owl-variant": ["--sparsity_allocation", "owl", "--use_variant"],
    "magnitude": ["--prune_method", "magnitude"],
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_two_ranks_give_the_single_process_masks(case, tiny_model_dir, calibration_text_file, tmp_path):
    extra = CASES[case]
    ok(single(run_args(tiny_model_dir, calibration_text_file, tmp_path / "single", *extra)))
    done, _ = torchrun(run_args(tiny_model_dir, calibration_text_file, tmp_path / "parallel", *extra))
    ok(done)
    assert_same_masks(tmp_path / "single", tmp_path / "parallel")
    report = json.loads((tmp_path / "parallel" / "report" / "report.json").read_text())
    parallel = report["distributed"]
    assert parallel["world_size"] == 2 and parallel["backend"] == "gloo"
    # every calibration sample and evaluation window exactly once, in whole batches of 2: 4 + 3 samples
    # (magnitude uses none)
    shares = [[0, 0], [0, 0]] if case == "magnitude" else [[0, 4], [4, 7]]
    assert [r["calibration_samples"] for r in parallel["ranks"]] == shares
    windows = [r["eval_windows"] for r in parallel["ranks"]]
    assert windows[0][0] == 0 and windows[0][1] == windows[1][0] and windows[1][1] == 5
    assert all(r["peak_rss_mb"] > 0 for r in parallel["ranks"])
    assert done.stdout.count("pruned model saved to") == 1  # rank 0 alone logs (and saves)
    if case == "three_tier":
        single_report = json.loads((tmp_path / "single" / "report" / "report.json").read_text())
        assert report["block_importance"]["influence"] == single_report["block_importance"]["influence"]
        assert report["block_importance"]["outlier"] == single_report["block_importance"]["outlier"]


@pytest.mark.slow
def test_three_ranks_uneven_shares(tiny_model_dir, calibration_text_file, tmp_path):
    """4 batches on 3 ranks (2 + 1 + 1), and one evaluation window: ranks 1 and 2 score none."""
    ok(single(run_args(tiny_model_dir, calibration_text_file, tmp_path / "single", "--eval_limit", "1")))
    done, _ = torchrun(run_args(tiny_model_dir, calibration_text_file, tmp_path / "parallel", "--eval_limit", "1",
                                "--log_all_ranks"), nproc=3)
    ok(done)
    assert_same_masks(tmp_path / "single", tmp_path / "parallel")
    ranks = json.loads((tmp_path / "parallel" / "report" / "report.json").read_text())["distributed"]["ranks"]
    assert [r["calibration_samples"] for r in ranks] == [[0, 4], [4, 6], [6, 7]]
    assert [r["eval_windows"] for r in ranks] == [[0, 1], [1, 1], [1, 1]]
    assert "[rank 2 of 3] calibration data:" in done.stdout  # --log_all_ranks: the others speak too


def no_outputs(out: Path) -> None:
    """Nothing written: no report, no model, no partial model, no lock file."""
    assert not out.exists(), sorted(path.name for path in out.iterdir())


@pytest.mark.slow
def test_bad_input_is_refused_on_every_rank_before_any_collective(tiny_model_dir, calibration_text_file, tmp_path):
    out = tmp_path / "run"
    done, seconds = torchrun(run_args(tiny_model_dir, calibration_text_file, out, "--nsamples", "1"))
    assert done.returncode != 0 and seconds < BOUNDED_S
    for rank in range(2):
        assert (f"error: rank {rank} of 2: --nsamples 1 with --batch_size 2 makes 1 calibration batch(es) for 2 ranks"
                in done.stderr)
    no_outputs(out)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["raise", "oom", "kill"])
def test_a_rank_failing_mid_block_takes_the_run_down(kind, tiny_model_dir, calibration_text_file, tmp_path):
    out = tmp_path / "run"
    done, seconds = torchrun(run_args(tiny_model_dir, calibration_text_file, out), fault=f"1:1:{kind}",
                             script="tests/distributed_fault.py")
    assert done.returncode != 0
    assert seconds < BOUNDED_S, f"took {seconds:.0f}s"
    if kind == "raise":
        assert "error: rank 1 of 2: injected fault in block 1" in done.stderr
    if kind == "oom":
        assert ("error: rank 1 of 2: out of memory (injected: tried to allocate 2.00 GiB in block 1); lower --batch_size"
                in done.stderr)
    no_outputs(out)


@pytest.mark.slow
def test_resume_per_rank(tiny_model_dir, calibration_text_file, tmp_path):
    """A 2-rank run stopped in block 2 (checkpoints after every block) resumes with 2 ranks, and only so."""
    run = run_args(tiny_model_dir, calibration_text_file, tmp_path / "run", "--checkpoint_every", "0")
    done, _ = torchrun(run, fault="1:2:raise", script="tests/distributed_fault.py")
    assert done.returncode != 0
    resume_dir = tmp_path / "run" / ".model.partial" / "resume"
    assert sorted(p.name for p in resume_dir.glob("state*.json")) == ["state.rank0.json", "state.rank1.json"]

    refused = single([*run, "--resume"])
    assert refused.returncode == 2
    assert "ran as 2 processes, this one as one process; resume it with `torchrun --nproc_per_node 2" in refused.stderr
    refused, _ = torchrun([*run, "--resume"], nproc=3)
    assert refused.returncode != 0 and "ran as 2 processes, this one as 3 processes" in refused.stderr

    done, _ = torchrun([*run, "--resume"])
    ok(done)
    assert json.loads((tmp_path / "run" / "report" / "report.json").read_text())["resumed_from_block"] == 2
    assert not (tmp_path / "run" / ".model.partial").exists()
    ok(single(run_args(tiny_model_dir, calibration_text_file, tmp_path / "single")))
    assert_same_masks(tmp_path / "single", tmp_path / "run")


def test_plain_run_has_no_process_group(tiny_model_dir, calibration_text_file, tmp_path):
    report = run_prune(tiny_run_config(tiny_model_dir, calibration_text_file, tmp_path))
    assert report.distributed is None and not dist.is_initialized()


@pytest.mark.parametrize("command", [["eval", "--tasks", "wikitext2"], ["finetune", "--output", "x"]])
def test_other_commands_refuse_torchrun(command, monkeypatch, capsys):
    import cli

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert cli.main(command) == 2
    assert f"error: rank 1 of 2: `cli.py {command[0]}` runs in one process" in capsys.readouterr().err
