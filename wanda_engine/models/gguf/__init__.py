"""GGUF sources: a GGUF file is converted once, a block at a time in a child process, into a plain
safetensors model in the cache, which pruning then streams. This package owns all of it: where
conversions live and how they are keyed, listed and removed (cache.py), the parent's and the child's
side of the conversion (protocol.py) and the conversion itself (convert.py)."""

from __future__ import annotations

import time
from pathlib import Path

from ...errors import UserError
from ...locks import FileLock, LockBusy, lock_path_for
from .cache import (
    Conversion, conversion_dir, conversions, default_cache_dir, remove_conversions, remove_orphaned_tmp_dirs, tree_size,
)
from .protocol import convert_in_child


def cached_conversion(gguf: Path, cache_root: Path, log, progress: bool, on_config=None, wait_s: float = 0.0
                      ) -> tuple[Path, str, FileLock]:
    """The cached conversion of `gguf`, converting it first where there is none; `on_config(directory)`
    is called with the converted config.json in `directory` before any tensor is converted, and may
    raise to stop the conversion. Returns the conversion's directory, where it came from, and a shared
    lock on it, which the caller holds while it reads the conversion so that `cache --remove` refuses to
    remove it meanwhile. Converting takes the lock exclusively: a second run that needs the same
    conversion meanwhile is refused, naming the converting run, unless `wait_s` > 0 (the ranks of a
    data-parallel run on one machine: one converts, the others wait up to `wait_s` seconds for it)."""
    target = conversion_dir(gguf, cache_root)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--cache_dir {str(cache_root)!r}: cannot create {str(target.parent)!r} ({exc.strerror or exc}); "
                        "choose a writable cache directory") from None
    remove_orphaned_tmp_dirs(target.parent)
    source = f"cached conversion {target}"
    deadline, waiting, changes = time.monotonic() + wait_s, False, 0
    while True:
        converted = (target / "config.json").is_file()
        lock = FileLock(lock_path_for(target), shared=converted)
        try:
            _take_cache_lock(lock, target)
        except LockBusy as busy:
            if time.monotonic() >= deadline:
                raise UserError(
                    f"GGUF file {str(gguf)!r}: another run is converting or removing its cached conversion {target} "
                    f"({busy.who()}); wait for that run to end, then run again"
                ) from None
            if not waiting:
                log(f"waiting for another process converting {gguf.name} ({busy.who()}) ...")
                waiting = True
            time.sleep(1.0)  # whether it is converted is looked at again: a finished conversion is read shared
            continue
        if (target / "config.json").is_file() == converted:
            if converted:
                return target, source, lock
            break
        lock.release()  # a conversion finished or removed by another run meanwhile: look again
        changes += 1
        if changes >= 3:
            raise UserError(f"GGUF file {str(gguf)!r}: its cached conversion {target} keeps changing under other runs; run again")
    try:
        log(f"converting {gguf.name} to safetensors (one time, cached in {target}) ...")
        started = time.perf_counter()
        child_peak_mb, notes = convert_in_child(gguf, target, progress, on_config)
        for note in notes:
            log(f"note: {note}")
        log(f"converted in {time.perf_counter() - started:.1f} s (in a child process, peak RSS {child_peak_mb:.0f} MB)")
        lock.share()  # from converting it to reading it, without letting go of the lock file
    except BaseException:
        lock.release()
        raise
    return target, f"converted from {gguf} into {target} (child process peak RSS {child_peak_mb:.0f} MB)", lock


def _take_cache_lock(lock: FileLock, target: Path) -> None:
    """Acquire `lock` (LockBusy when another run holds it in a conflicting mode)."""
    try:
        lock.acquire()
    except OSError as exc:
        if lock.shared:  # a read-only cache: nobody can remove the conversion while it is read either
            return
        raise UserError(f"cache directory {str(target.parent)!r}: cannot create a lock file there "
                        f"({exc.strerror or exc}); choose a writable --cache_dir") from None


__all__ = [
    "Conversion", "cached_conversion", "conversion_dir", "conversions", "default_cache_dir", "remove_conversions",
    "tree_size",
]
