"""Where GGUF conversions live in the cache: `<cache_dir>/converted/<name>-<key>/`, keyed by the GGUF
file's content; the temporary directories of running conversions; listing and removing conversions
(`python cli.py cache`). A conversion in use is guarded by a lock file beside it (`.NAME.lock`: shared
while runs read it, exclusive while it is converted or removed)."""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from ...digests import file_ends_digest
from ...errors import UserError
from ...locks import FileLock, LockBusy, lock_path_for, process_exists

CONVERTED = "converted"


def default_cache_dir() -> Path:
    return Path(os.environ.get("WANDA_ENGINE_CACHE", Path.home() / ".cache" / "wanda_engine"))


def conversion_dir(gguf: Path, cache_root: Path) -> Path:
    """The conversion's cache directory, keyed by the file's content (`file_ends_digest`: its size and
    the SHA-256 of its first and last 4 MiB, the header with the model's metadata and tensor table, and
    the last tensors' data). Not by path or mtime, so that every virtual environment that installs the
    same wheel shares one conversion instead of converting again; and not by a hash of the whole file,
    which would take seconds for a 40 GB GGUF on every run."""
    return cache_root / CONVERTED / f"{gguf.stem}-{file_ends_digest(gguf)[:12]}"


def tmp_prefix() -> str:
    """`.tmp-<host>-`: a conversion's temporary directory is `.tmp-<host>-<pid>-<random>`, so that a
    cache shared between machines (a network home) is only swept of this machine's leftovers."""
    return f".tmp-{socket.gethostname()}-"


def remove_orphaned_tmp_dirs(directory: Path) -> None:
    """Remove this machine's temporary conversion directories whose process no longer runs: what a
    conversion killed outright (SIGKILL, power loss) leaves behind, possibly gigabytes."""
    if os.name != "posix" or not directory.is_dir():  # os.kill(pid, 0) only probes on POSIX
        return
    prefix = tmp_prefix()
    for path in directory.iterdir():
        pid = path.name[len(prefix):].split("-", 1)[0] if path.name.startswith(prefix) else ""
        if pid.isdigit() and not process_exists(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class Conversion:
    name: str
    path: Path
    size_bytes: int
    converted_at: float  # modification time of its config.json, seconds since the epoch


def tree_size(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())


def conversions(cache_root: Path) -> list[Conversion]:
    """The finished conversions in the cache (temporary directories of running ones are not listed)."""
    converted = cache_root / CONVERTED
    if not converted.is_dir():
        return []
    found = []
    for path in sorted(converted.iterdir()):
        config = path / "config.json"
        if path.name.startswith(".") or not config.is_file():
            continue
        found.append(Conversion(path.name, path, tree_size(path), config.stat().st_mtime))
    return found


def remove_conversions(cache_root: Path, names: list[str] | None) -> list[Conversion]:
    """Remove the named conversions (all of them for None) and return what was removed. Every name is
    checked, and locked, before anything is removed; a run that uses a removed conversion converts it again."""
    present = {conversion.name: conversion for conversion in conversions(cache_root)}
    if names is None:
        names = list(present)
    unknown = [name for name in names if name not in present]
    if unknown:
        raise UserError(f"--remove {unknown[0]!r}: no such conversion in {cache_root / CONVERTED}; "
                        "`python cli.py cache` lists them")
    locks = []
    try:
        for name in names:  # a run reading a conversion holds it shared: refuse before removing anything
            lock = FileLock(lock_path_for(present[name].path))
            try:
                locks.append(lock.acquire())
            except LockBusy as busy:
                raise UserError(f"--remove {name!r}: the conversion is in use ({busy.who('a running run reads it')}); "
                                "run again once that run has ended") from None
            except OSError as exc:
                raise UserError(f"--remove {name!r}: cannot lock it ({exc.strerror or exc}); check the cache's permissions") from None
        for name in names:
            shutil.rmtree(present[name].path)
    finally:
        for lock in locks:
            lock.release()
    return [present[name] for name in names]
