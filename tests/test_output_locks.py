"""A run owns its outputs: two real processes aimed at one --save_model, --save or GGUF conversion; a
lock left by a killed run; outputs on a read-only file system or at a mount point."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model_helpers import saved_weights
from wanda_engine.api import PruneConfig, run_prune

pytestmark = pytest.mark.slow  # real processes

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

# A real `cli.py` process that stops inside its run until told to go on: at the start of block 1's
# pruning (`--pause prune`) or just before converting a GGUF file (`--pause convert`).
_PAUSING_CLI = r"""
import sys, time, pathlib
ready, go, where = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
def pause():
    ready.touch()
    while not go.exists():
        time.sleep(0.05)
if where == "prune":
    from wanda_engine.prune.schedules.reference import ReferenceSchedule
    original = ReferenceSchedule.prune_block
    calls = []
    def prune_block(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            pause()
        return original(self, *args, **kwargs)
    ReferenceSchedule.prune_block = prune_block
else:
    from wanda_engine.models import gguf
    original = gguf.convert_in_child
    def convert(*args, **kwargs):
        pause()
        return original(*args, **kwargs)
    gguf.convert_in_child = convert
import cli
sys.exit(cli.main(sys.argv[4:]))
"""


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)])}


class PausedRun:
    """`cli.py prune ARGS` in a child process, paused at `where` until `go()`."""

    def __init__(self, tmp_path: Path, args: list[str], where: str = "prune") -> None:
        self.ready, self.release = tmp_path / f"ready-{where}", tmp_path / f"go-{where}"
        self.process = subprocess.Popen(
            [sys.executable, "-c", _PAUSING_CLI, str(self.ready), str(self.release), where, *args],
            cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 180
        while not self.ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                out, err = self.process.communicate(timeout=30)
                raise AssertionError(f"the first run never paused (exit {self.process.returncode}): {out}\n{err}")
            time.sleep(0.05)

    def go(self) -> tuple[int, str, str]:
        self.release.touch()
        out, err = self.process.communicate(timeout=300)
        return self.process.returncode, out, err


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "cli.py", *args], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=300)


def _args(model_dir: str, text_file: str, tmp_path: Path, *extra: str) -> list[str]:
    return ["prune", "--model", model_dir, "--calibration_dataset", text_file, "--eval", text_file, "--nsamples", "4",
            "--seqlen", "32", "--batch_size", "2", "--eval_limit", "2", "--no_progress",
            "--cache_dir", str(tmp_path / "cache"), *extra]


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_second_run_on_the_same_save_model_is_refused_and_the_first_owns_it(tiny_model_dir, calibration_text_file, tmp_path):
    out = tmp_path / "pruned"
    first = PausedRun(tmp_path, _args(tiny_model_dir, calibration_text_file, tmp_path, "--save_model", str(out)))
    assert (tmp_path / ".pruned.partial").is_dir() and (tmp_path / ".pruned.lock").is_file()
    for extra in ([], ["--resume"], ["--overwrite"]):  # what used to mix a sequential run into the first one's blocks
        second = _cli(_args(tiny_model_dir, calibration_text_file, tmp_path, "--schedule", "sequential",
                            "--save_model", str(out), *extra))
        assert second.returncode == 2
        line = _one_line(second.stderr)
        assert "--save_model" in line and "another run is writing it" in line and f"pid {first.process.pid}" in line, line
    code, stdout, stderr = first.go()
    assert code == 0, stderr
    solo = tmp_path / "solo"
    run_prune(PruneConfig(model=tiny_model_dir, calibration_dataset=calibration_text_file, eval=calibration_text_file,
                          nsamples=4, seqlen=32, batch_size=2, eval_limit=2, cache_dir=str(tmp_path / "cache"),
                          progress=False, save_model=str(solo)), log=lambda *_: None)
    expected, got = saved_weights(solo), saved_weights(out)
    assert expected.keys() == got.keys() and all(torch.equal(got[name], expected[name]) for name in expected)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [], "partial or lock left behind"


def test_second_run_on_the_same_save_dir_is_refused(tiny_model_dir, calibration_text_file, tmp_path):
    report = tmp_path / "report"
    first = PausedRun(tmp_path, _args(tiny_model_dir, calibration_text_file, tmp_path, "--save", str(report)))
    second = _cli(_args(tiny_model_dir, calibration_text_file, tmp_path, "--save", str(report), "--overwrite"))
    assert second.returncode == 2
    line = _one_line(second.stderr)
    assert "--save" in line and f"pid {first.process.pid}" in line and "perplexity" not in second.stdout
    code, _, stderr = first.go()
    assert code == 0, stderr
    assert json.loads((report / "report.json").read_text())["schedule"] == "reference"
    assert not (tmp_path / ".report.lock").exists()


def test_lock_of_a_killed_run_is_taken_over_and_its_checkpoint_resumed(tiny_model_dir, calibration_text_file, tmp_path):
    out = tmp_path / "pruned"
    args = _args(tiny_model_dir, calibration_text_file, tmp_path, "--save_model", str(out), "--checkpoint_every", "0")
    first = PausedRun(tmp_path, args)
    first.process.send_signal(signal.SIGKILL)  # no clean-up of any kind runs
    first.process.communicate(timeout=60)
    lock = tmp_path / ".pruned.lock"
    assert lock.is_file() and json.loads(lock.read_text())["pid"] == first.process.pid
    resumed = _cli(args + ["--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert "took over the lock" in resumed.stdout and f"pid {first.process.pid}" in resumed.stdout
    assert "resuming from block 1" in resumed.stdout
    assert not lock.exists() and (out / "model.safetensors.index.json").is_file()


def test_second_conversion_of_one_gguf_is_refused(tmp_path):
    from test_gguf_cache import write_tiny_gguf

    gguf = tmp_path / "tiny.gguf"
    write_tiny_gguf(gguf, blocks=1)
    args = ["prune", "--model", str(gguf), "--prune_method", "magnitude", "--eval", "none", "--seqlen", "16",
            "--no_progress", "--cache_dir", str(tmp_path / "cache")]
    first = PausedRun(tmp_path, args, where="convert")
    second = _cli(args)
    assert second.returncode == 2
    line = _one_line(second.stderr)
    assert "converting or removing its cached conversion" in line and f"pid {first.process.pid}" in line
    code, _, stderr = first.go()
    assert code == 0, stderr
    again = _cli(args)  # the finished conversion is shared
    assert again.returncode == 0 and "cached conversion" in again.stdout, again.stderr


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt 2>/dev/null || mount -t tmpfs tmpfs /tmp"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(not _unshare_works(), reason="needs `unshare -rm` to mount a read-only tmpfs")


def _cli_beside_read_only_mount(mount: Path, args: list[str]) -> subprocess.CompletedProcess:
    """`cli.py ARGS` in a private mount namespace where `mount` is a read-only tmpfs (the host is untouched)."""
    mount.mkdir()
    script = f'mount -t tmpfs -o ro tmpfs "{mount}" && exec "{sys.executable}" cli.py "$@"'
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", *args], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)


@needs_mounts
@pytest.mark.parametrize("flag", ["--save", "--save_model"])
def test_output_on_a_read_only_file_system_is_refused_before_any_work(flag, tiny_model_dir, calibration_text_file, tmp_path):
    mount = tmp_path / "ro"
    result = _cli_beside_read_only_mount(mount, _args(tiny_model_dir, calibration_text_file, tmp_path, flag, str(mount / "out")))
    assert result.returncode == 2
    line = _one_line(result.stderr)
    assert flag in line and "read-only file system" in line and "choose a writable directory" in line
    assert "perplexity" not in result.stdout and "calibration data" not in result.stdout


@needs_mounts
@pytest.mark.parametrize("flag", ["--save", "--save_model"])
def test_output_at_a_mount_point_is_refused_and_leaves_nothing(flag, tiny_model_dir, calibration_text_file, tmp_path):
    mount = tmp_path / "ro"
    result = _cli_beside_read_only_mount(mount, _args(tiny_model_dir, calibration_text_file, tmp_path, flag, str(mount)))
    assert result.returncode == 2
    line = _one_line(result.stderr)
    assert "is a mount point" in line and "give a directory inside it" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro"], "partial, old or lock directories left behind"


# --- the lock itself -------------------------------------------------------------------------------

_HOLD_LOCK = r"""
import sys, time, pathlib
from wanda_engine.locks import FileLock
lock = FileLock(pathlib.Path(sys.argv[1]), shared=sys.argv[2] == "shared").acquire()
print("held", flush=True)
sys.stdin.readline()
"""


class HeldElsewhere:
    """A lock held by another process until `close()` (flock is per open file, so the other process
    is what a real second run would be)."""

    def __init__(self, path: Path, mode: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(path), mode], env=_env(), text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.process.stdout.readline().strip() == "held"

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def test_shared_locks_coexist_and_exclude_an_exclusive_one(tmp_path):
    from wanda_engine.locks import FileLock, LockBusy

    path = tmp_path / ".conversion.lock"
    readers = [HeldElsewhere(path, "shared") for _ in range(2)]  # two runs reading one conversion
    mine = FileLock(path, shared=True).acquire()  # a third one too
    with pytest.raises(LockBusy) as busy:  # `cache --remove` meanwhile
        FileLock(path).acquire()
    assert busy.value.holder is None  # readers do not name themselves
    for reader in readers:
        reader.close()
    mine.release()
    assert path.exists()  # readers leave the file: removing it would take an exclusive lock for a moment
    with FileLock(path) as remover:
        assert remover.held
    assert not path.exists()  # an exclusive holder removes it


def test_exclusive_lock_names_its_holder_and_is_released_when_the_holder_dies(tmp_path):
    from wanda_engine.locks import FileLock, LockBusy

    path = tmp_path / ".out.lock"
    holder = HeldElsewhere(path, "exclusive")
    with pytest.raises(LockBusy) as busy:
        FileLock(path, shared=True).acquire()
    assert busy.value.holder.pid == holder.process.pid and "-c" in busy.value.holder.command
    holder.process.kill()
    holder.process.wait(timeout=30)
    taken = FileLock(path).acquire()  # the kernel dropped the dead process's lock
    assert taken.stale is not None and taken.stale.pid == holder.process.pid
    taken.release()


def test_lock_file_removed_between_open_and_flock_is_locked_anew(tmp_path, monkeypatch):
    """An exclusive holder removes the file as it releases it: a process that opened the old file just
    before must not believe it holds the lock of the path (the inode is checked after flock)."""
    import fcntl

    from wanda_engine import locks

    path = tmp_path / ".out.lock"
    path.write_text("")
    real_flock, swapped = fcntl.flock, []

    def flock_after_the_file_was_replaced(fd, operation):
        if not swapped:
            swapped.append(True)
            path.unlink()
            path.write_text("")  # what the next run creates
        return real_flock(fd, operation)

    monkeypatch.setattr(locks.fcntl, "flock", flock_after_the_file_was_replaced)
    lock = locks.FileLock(path).acquire()
    assert locks._same_file(lock._fd, path)
    lock.release()
