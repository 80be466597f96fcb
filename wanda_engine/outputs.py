"""A run's output directories (--save, --save_model): checked, made writable and locked before any work,
and written atomically at the end.

Everything goes to a directory beside the target, renamed into place only when complete, so a failure
never leaves a half-written output. A lock file beside the target (`.NAME.lock`, see locks.py) is held
for the whole run, so that a second run aimed at the same directory is refused instead of writing into
it too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import UserError
from .locks import FileLock, LockBusy, lock_path_for


def check_output_dir(path: str | os.PathLike, flag: str, overwrite: bool) -> Path:
    """Refuse an existing non-empty directory (unless overwrite) before any work is done."""
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise UserError(f"{flag} {str(path)!r}: exists and is not a directory; choose another path")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise UserError(f"{flag} {str(path)!r}: directory exists and is not empty; choose another path or pass --overwrite")
    return target


class OutputDir:
    """One output directory of a run. `claim()` makes its parent, checks that the target can be
    replaced by a rename, and takes its lock (refusing when another run holds it); `release()` drops
    the lock and removes the parents `claim()` made when nothing was written into them."""

    def __init__(self, path: str | os.PathLike, flag: str, overwrite: bool) -> None:
        self.flag = flag
        self.given = str(path)
        self.target = check_output_dir(path, flag, overwrite)
        self.lock = FileLock(lock_path_for(self.target))
        self._made: list[Path] = []  # parents made by claim(), deepest last

    def claim(self) -> str | None:
        """Take the directory for this run; returns a note for the log when a dead run's lock was taken over."""
        if os.path.ismount(self.target):
            raise UserError(
                f"{self.flag} {self.given!r}: is a mount point, which the finished output cannot be renamed onto; "
                f"give a directory inside it, e.g. {str(self.target / 'pruned')!r}"
            )
        self._make_parents()
        try:
            self.lock.acquire()
        except LockBusy as busy:
            self.release()
            raise UserError(
                f"{self.flag} {self.given!r}: another run is writing it ({busy.who()}); wait for that run to end, "
                "or choose another directory"
            ) from None
        except OSError as exc:
            self.release()
            raise _unwritable(self.flag, self.given, self.target.parent, exc) from None
        if self.target.is_dir() and not os.access(self.target, os.W_OK):  # replacing it moves it: needs write access
            self.release()
            raise UserError(f"{self.flag} {self.given!r}: exists and is not writable; choose another directory")
        stale = self.lock.stale
        if stale is not None:
            return f"{self.flag} {self.given}: took over the lock of a run that ended without releasing it ({stale.describe()})"
        return None

    def release(self) -> None:
        self.lock.release()
        self.remove_made_parents()

    def remove_made_parents(self) -> None:
        for parent in reversed(self._made):
            with contextlib.suppress(OSError):
                parent.rmdir()  # only when empty: an output written into it stays
        self._made.clear()

    def _make_parents(self) -> None:
        missing = []
        parent = self.target.parent
        while not parent.exists() and parent != parent.parent:
            missing.append(parent)
            parent = parent.parent
        for directory in reversed(missing):
            try:
                directory.mkdir()
            except FileExistsError:
                continue
            except OSError as exc:
                self.release()
                raise _unwritable(self.flag, self.given, directory.parent, exc) from None
            self._made.append(directory)


def release_all(outputs: list[OutputDir]) -> None:
    """Release the claims of one run: every lock first, then the parents the claims made (a parent
    made for --save may also hold --save_model's lock file, which must be gone before it can go)."""
    for output in outputs:
        output.lock.release()
    for output in reversed(outputs):
        output.remove_made_parents()


def _unwritable(flag: str, given: str, directory: Path, exc: OSError) -> UserError:
    reason = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied", errno.EPERM: "permission denied",
              errno.ENOSPC: "no space left", errno.ENOTDIR: "a path component is not a directory"}.get(
        exc.errno, exc.strerror or type(exc).__name__)
    return UserError(f"{flag} {given!r}: cannot write in {str(directory)!r} ({reason}); choose a writable directory")


def replace_dir(complete: Path, target: Path) -> None:
    """Move the finished directory `complete` onto `target` (an old `target` is removed only after)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        try:
            os.replace(target, old / "previous")
        except OSError:
            old.rmdir()
            raise
    os.chmod(complete, 0o755)
    os.replace(complete, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write one file by renaming a finished temporary file beside it over it: a reader sees the old
    content or the new, never a part."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as f:
            f.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


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
