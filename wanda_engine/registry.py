"""The one registry shape: name → entry, filled by a decorator when the entry's module is imported.

Used for pruning methods, schedules, sparsity-allocation policies and the data adapters (calibration
sources, their prefixes and file types, evaluation texts)."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from .errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries are registered with a decorator under one or more names (and aliases, which resolve to
    the first name); a decorated class is stored as one instance of it, since entries are stateless.
    A `fallback` entry is what `find` returns for any unknown name."""

    def __init__(self, kind: str, flag: str) -> None:
        self.kind = kind  # e.g. "pruning method", for messages
        self.flag = flag  # the CLI flag that picks an entry, for messages
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._fallback: T | None = None

    def register(self, *names: str, aliases: tuple[str, ...] = (), fallback: bool = False) -> Callable:
        def add(entry):
            value = entry() if isinstance(entry, type) else entry
            for name in names:
                if name in self._entries:
                    raise RuntimeError(f"{self.kind} {name!r} registered twice")
                self._entries[name] = value
            for alias in aliases:
                self._aliases[alias] = names[0]
            if fallback:
                self._fallback = value
            return entry

        return add

    def names(self) -> list[str]:
        return sorted(self._entries)

    def canonical(self, name: str) -> str | None:
        """The registered name for `name` or one of its aliases; None when neither."""
        return name if name in self._entries else self._aliases.get(name)

    def find(self, name: str) -> T | None:
        """The entry for `name` (or an alias), else the fallback entry, else None."""
        canonical = self.canonical(name)
        return self._entries[canonical] if canonical is not None else self._fallback

    def get(self, name: str) -> T:
        """The entry for `name`, or a one-line UserError naming the choices."""
        canonical = self.canonical(name)
        if canonical is None:
            raise UserError(f"{self.flag} {name!r}: unknown {self.kind}; choose one of {', '.join(self.names())}")
        return self._entries[canonical]
