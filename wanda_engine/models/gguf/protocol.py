"""The GGUF conversion runs in a child Python process, so that its memory is returned before pruning
starts; this is both sides of its conversation with the parent.

    python -m wanda_engine.models.gguf.protocol SOURCE.gguf EMPTY_DIR

The child writes the model and tokenizer into EMPTY_DIR (the parent made it and moves it into the
cache). On stdout it prints `config_ready` once EMPTY_DIR/config.json is written, then waits for
`go_on` on stdin (the parent checks the model on its config first; by hand: `echo go_on | python -m
...`); then `tensors <done> <total>` lines as it goes, `note: <text>` lines for the user and
`peak_rss_mb <float>` at the end. On failure it prints one line `error: <type>: <message>` on stderr.
It stops at its next tensor once its parent is gone (the pipe it prints to breaks), so an orphaned
conversion does not keep writing into the cache.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from tqdm.auto import tqdm

from ...errors import UserError
from .cache import tmp_prefix

ERROR_PREFIX = "error: "
PEAK_PREFIX = "peak_rss_mb "
PROGRESS_PREFIX = "tensors "
NOTE_PREFIX = "note: "
CONFIG_READY = "config_ready"  # then the child waits for GO_ON on stdin
GO_ON = "go_on"


# --- the parent's side --------------------------------------------------------------------------

# The child imports exactly what this process imports: its sys.path is set to ours (-I keeps the
# current directory, PYTHONPATH and user site-packages from adding to or reordering it).
_CHILD_CODE = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from wanda_engine.models.gguf.protocol import child_main; sys.exit(child_main(sys.argv[2:]))"
)


def convert_in_child(gguf: Path, target: Path, progress: bool = True, on_config=None) -> tuple[float, list[str]]:
    """Convert `gguf` into the cache directory `target` in a child Python process (`child_main`),
    so that the conversion's memory is returned before pruning; returns the child's peak RSS in MB
    and its notes for the user.

    The child writes into a temporary directory that this process created and renames into place or
    removes in every case, Ctrl-C included (the child is stopped first), so the cache never holds a
    partial conversion. A temporary directory left by a process that was killed outright is removed
    by the next run that uses the cache (cache.remove_orphaned_tmp_dirs; the child itself stops once
    its parent is gone)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{tmp_prefix()}{os.getpid()}-", dir=target.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is an ordinary directory
        command = [sys.executable, "-I", "-c", _CHILD_CODE, json.dumps(sys.path), str(gguf), str(tmp)]
        # stderr to a file: a pipe nobody reads while stdout is followed could fill up and stall the child
        with tempfile.TemporaryFile("w+", errors="replace") as stderr_file:
            with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr_file,
                                  text=True, errors="replace") as child:  # its pipes are closed on leaving
                try:
                    stdout = follow_child(child, gguf.name, progress, lambda: on_config and on_config(tmp))
                except BaseException:
                    child.terminate()  # it must not write into tmp while it is removed
                    child.wait()
                    raise
            stderr_file.seek(0)
            stderr = stderr_file.read()
        if child.returncode != 0:
            raise UserError(f"GGUF file {str(gguf)!r}: conversion to safetensors failed ({child_failure(child.returncode, stderr)}); "
                            "check that it is a complete LLaMA-family GGUF file")
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
            # another process finished the same conversion meanwhile: use it (tmp is removed below)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    peaks = [line[len(PEAK_PREFIX):] for line in stdout if line.startswith(PEAK_PREFIX)]
    notes = [line[len(NOTE_PREFIX):] for line in stdout if line.startswith(NOTE_PREFIX)]
    return (float(peaks[-1]) if peaks else float("nan")), notes


def follow_child(child: subprocess.Popen, what: str, progress: bool, on_config) -> list[str]:
    """Read the conversion child's stdout to its end, showing its `tensors <done> <total>` lines as a
    progress bar; when it says its config is written, call `on_config()` (which may raise to refuse the
    model) and tell it to go on. Returns the other lines, once the child has exited."""
    lines, bar = [], None
    try:
        for line in child.stdout:
            if line.rstrip("\n").endswith(CONFIG_READY):  # endswith: after any unterminated output of the child
                on_config()
                try:  # unbuffered, so that nothing is left to flush into a broken pipe later
                    os.write(child.stdin.fileno(), f"{GO_ON}\n".encode())
                except BrokenPipeError:  # it died meanwhile: its exit status tells why, below
                    pass
                continue
            counts = line[len(PROGRESS_PREFIX):].split() if line.startswith(PROGRESS_PREFIX) else []
            if len(counts) == 2 and all(count.isdigit() for count in counts):
                done, total = map(int, counts)
                if bar is None:  # from the first converted tensor on: before it, the child is importing
                    bar = tqdm(total=total, desc=f"converting {what}", unit="tensor", disable=not progress)
                bar.update(done - bar.n)
            else:
                lines.append(line.rstrip("\n"))
    finally:
        if bar is not None:
            bar.close()
    child.stdin.close()
    child.wait()
    return lines


def child_failure(returncode: int, stderr: str) -> str:
    """The conversion child's own one-line error, or what killed it."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:  # e.g. a real-time signal, which has no name
            name = f"signal {-returncode}"
        return f"the converter was killed by {name}" + (", likely out of memory" if name == "SIGKILL" else "")
    errors = [line[len(ERROR_PREFIX):] for line in stderr.splitlines() if line.startswith(ERROR_PREFIX)]
    if errors:
        return errors[-1]
    lines = stderr.strip().splitlines()
    return lines[-1] if lines else f"the converter exited with code {returncode}"


# --- the child's side ---------------------------------------------------------------------------


def child_main(argv: list[str]) -> int:
    """The child's side: convert argv[0] into the empty directory argv[1], talking to the parent on
    stdout/stdin as the module docstring says; exit status 0 on success."""
    if len(argv) != 2:
        print(f"{ERROR_PREFIX}usage: python -m wanda_engine.models.gguf.protocol SOURCE.gguf EMPTY_DIR", file=sys.stderr)
        return 2

    # Printed as they come: the parent follows them. Once the parent is gone, a write fails
    # (BrokenPipeError), so an orphaned conversion stops at its next tensor.
    def report(done: int, total: int) -> None:
        print(f"{PROGRESS_PREFIX}{done} {total}", flush=True)

    def note(text: str) -> None:
        print(f"{NOTE_PREFIX}{text}", flush=True)

    def config_ready() -> None:  # the parent checks the model on its config before it is converted
        print(CONFIG_READY, flush=True)
        if sys.stdin.readline().strip() != GO_ON:
            raise RuntimeError("stopped before converting: the parent process refused the model or is gone")

    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        from .convert import convert_gguf

        convert_gguf(Path(argv[0]), Path(argv[1]), report, note, config_ready)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        lines = str(exc).strip().splitlines()
        kind = type(exc).__qualname__
        if type(exc).__module__ != "builtins":  # e.g. struct.error, not a bare "error"
            kind = f"{type(exc).__module__}.{kind}"
        print(f"{ERROR_PREFIX}{kind}: {lines[0] if lines else '(no message)'}", file=sys.stderr)
        return 1
    from wanda_engine.memory import peak_rss_mb

    print(f"{PEAK_PREFIX}{peak_rss_mb():.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
