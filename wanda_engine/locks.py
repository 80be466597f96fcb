"""Locks that make a run the only writer of its outputs (and of a GGUF conversion in the cache).

A lock is a small file beside what it guards (`.NAME.lock`), held with flock(2) for as long as the
guarded thing is being written or read. The kernel drops a flock when its process ends, however it
ends, so a lock file left behind by a killed run never blocks the next one: the next run takes it over
(and says so). An exclusive holder writes who it is into the file (pid, host, start time, command), so
that a refused run can name the run it collided with; shared holders (runs reading a conversion) write
nothing and leave the file in place. Exclusive holders remove the file when they release it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

_STARTED = time.strftime("%Y-%m-%d %H:%M:%S")


def lock_path_for(target: Path) -> Path:
    """The lock file guarding `target`: `.NAME.lock` in the same directory."""
    return target.parent / f".{target.name}.lock"


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a lock, as its file says."""

    pid: int | None = None
    host: str = ""
    started: str = ""
    command: str = ""

    @staticmethod
    def me() -> "Holder":
        command = shlex.join([Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]])
        return Holder(os.getpid(), socket.gethostname(), _STARTED, command[:300])

    @staticmethod
    def parse(text: str) -> "Holder | None":
        try:
            fields = json.loads(text)
            return Holder(int(fields["pid"]), str(fields["host"]), str(fields["started"]), str(fields["command"]))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        if self.pid is None:
            return "another run"
        return f"pid {self.pid} on {self.host}, started {self.started}: {self.command}"

    def dead_here(self) -> bool:
        """Whether this holder was a process on this host that no longer runs."""
        return self.pid is not None and self.host == socket.gethostname() and not process_exists(self.pid)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


class LockBusy(Exception):
    """The lock is held by another process (`holder`, None when it is held shared or unnamed)."""

    def __init__(self, path: Path, holder: Holder | None) -> None:
        super().__init__(f"{path} is held by {holder.describe() if holder else 'another run'}")
        self.path = path
        self.holder = holder

    def who(self, unnamed: str = "another run") -> str:
        """The holder in words for a message; `unnamed` when it did not name itself (a reader)."""
        return self.holder.describe() if self.holder else unnamed


class FileLock:
    """A non-blocking flock on `path` (created if missing). `acquire()` raises LockBusy when another
    process holds it in a conflicting mode and OSError when the file cannot be created (a read-only or
    missing directory). `stale` is set after an exclusive acquire that took over the lock file of a
    process of this host that had died holding it."""

    def __init__(self, path: Path, *, shared: bool = False) -> None:
        self.path = Path(path)
        self.shared = shared
        self.stale: Holder | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "FileLock":
        if self._fd is not None:
            return self
        # flock needs no write access: a reader can share a lock file another user created
        flags = (os.O_RDONLY if self.shared else os.O_RDWR) | os.O_CREAT
        for _ in range(20):  # retried only when the file was removed between our open and our flock
            fd = os.open(self.path, flags, 0o644)
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except OSError as exc:
                holder = Holder.parse(_read(fd))
                os.close(fd)
                if holder is not None and holder.dead_here():  # what a killed holder left; a reader holds it now
                    holder = None
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise LockBusy(self.path, holder) from None
                raise
            if _same_file(fd, self.path):
                break
            os.close(fd)  # an exclusive holder removed the file as it released it: lock the new one
        else:
            raise OSError(errno.EAGAIN, f"could not lock {self.path}")
        if not self.shared:
            try:
                previous = Holder.parse(_read(fd))
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(Holder.me().__dict__).encode(), 0)
            except OSError:
                os.close(fd)
                raise
            self.stale = previous if previous is not None and previous.dead_here() else None
        self._fd = fd
        return self

    def share(self) -> None:
        """Turn a held exclusive lock into a shared one, on the same file (no moment without a lock is
        promised by flock, but the file stays, so no other run can have removed what it guards)."""
        if self._fd is None or self.shared:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_SH)
        self.shared = True

    def release(self) -> None:
        """Drop the lock; an exclusive holder removes the file first (a reader leaves it: removing it
        would need an exclusive lock for a moment, which could refuse another reader)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if not self.shared and _same_file(fd, self.path):
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)  # closing drops the flock

    def __del__(self) -> None:  # a holder dropped without release(): do not keep the lock until the process ends
        try:
            self.release()
        except Exception:  # noqa: BLE001 - at interpreter shutdown the modules it uses may be gone
            pass

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 4096, 0).decode("utf-8", "replace")
    except OSError:
        return ""


def _same_file(fd: int, path: Path) -> bool:
    try:
        mine, now = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)


__all__ = ["FileLock", "Holder", "LockBusy", "lock_path_for", "process_exists"]
