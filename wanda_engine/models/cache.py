"""What the cache directory holds (`python cli.py cache`): GGUF conversions, one directory each under
`<cache_dir>/converted/`, and hub downloads under `<cache_dir>/hub/`. Nothing is evicted on its own;
conversions are listed with their size and removed on request (not while a run reads one: runs hold a
shared lock on the conversion they use, see locks.py)."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..locks import FileLock, LockBusy, lock_path_for


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
    converted = cache_root / "converted"
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
    checked before anything is removed; a run that uses a removed conversion converts it again."""
    present = {conversion.name: conversion for conversion in conversions(cache_root)}
    if names is None:
        names = list(present)
    unknown = [name for name in names if name not in present]
    if unknown:
        raise UserError(f"--remove {unknown[0]!r}: no such conversion in {cache_root / 'converted'}; "
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


def describe(cache_root: Path) -> list[str]:
    """Lines for the user: each conversion with its size and date, and the hub download total."""
    lines = [f"cache: {cache_root}"]
    found = conversions(cache_root)
    for conversion in found:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(conversion.converted_at))
        lines.append(f"  converted/{conversion.name}  {conversion.size_bytes / 2**20:,.0f} MB  (converted {when})")
    if not found:
        lines.append("  no GGUF conversions")
    hub = cache_root / "hub"
    if hub.is_dir():
        lines.append(f"  hub/  {tree_size(hub) / 2**20:,.0f} MB of hub downloads (delete the folder to free them; "
                     "a later run downloads again)")
    return lines
