"""`python cli.py cache`: what the cache directory holds (GGUF conversions under `converted/`, listed and
removed by models/gguf/cache.py; hub downloads under `hub/`). Nothing is evicted on its own."""

from __future__ import annotations

import time
from pathlib import Path

from .gguf import conversions, default_cache_dir, remove_conversions, tree_size


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


def cache_command(cache_dir: str | None, *, remove: list[str] = (), remove_all: bool = False, log=print) -> None:
    """`python cli.py cache`: remove the named conversions (or all), then list what the cache holds."""
    cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
    if remove or remove_all:
        removed = remove_conversions(cache_root, None if remove_all else list(remove))
        freed = sum(conversion.size_bytes for conversion in removed)
        log(f"removed {len(removed)} conversion(s), {freed / 2**20:,.0f} MB freed")
    for line in describe(cache_root):
        log(line)
