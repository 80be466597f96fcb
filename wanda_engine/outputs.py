"""Writing output directories atomically: everything goes to a temp dir beside the target, which is
renamed into place only when complete, so a failure never leaves a half-written output."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import UserError


def check_output_dir(path: str | os.PathLike, flag: str, overwrite: bool) -> Path:
    """Refuse an existing non-empty directory (unless overwrite) before any work is done."""
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise UserError(f"{flag} {str(path)!r}: exists and is not a directory; choose another path")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise UserError(f"{flag} {str(path)!r}: directory exists and is not empty; choose another path or pass --overwrite")
    return target


def replace_dir(complete: Path, target: Path) -> None:
    """Move the finished directory `complete` onto `target` (an old `target` is removed only after)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / "previous")
    os.chmod(complete, 0o755)
    os.replace(complete, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_output_dir(target: Path) -> Iterator[Path]:
    """Yield a temp dir to fill; on success it replaces `target` (an old one is removed only then)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
