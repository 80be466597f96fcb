"""A tiny name → object registry, shared by pruning methods and sparsity-allocation policies."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from .errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries are registered with a decorator; a decorated class is stored as one instance of it,
    since entries are stateless policies."""

    def __init__(self, kind: str, flag: str) -> None:
        self.kind = kind  # e.g. "pruning method", for messages
        self.flag = flag  # the CLI flag that picks an entry, for messages
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable:
        def add(entry):
            if name in self._entries:
                raise RuntimeError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = entry() if isinstance(entry, type) else entry
            return entry

        return add

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UserError(f"{self.flag} {name!r}: unknown {self.kind}; choose one of {', '.join(self.names())}") from None
