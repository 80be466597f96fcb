"""Tiny name → adapter registry for calibration sources and evaluation texts.

Adapters register themselves with a decorator when their module is imported
(``wanda_engine.data.__init__`` imports them all):

    @register_calibration("wikitext2", aliases=("wikitext",))
    def load(req: Request) -> CalibrationSet: ...

    @register_eval("wikitext2")
    def eval_text(data_dir: str | None) -> tuple[str, str]: ...

    @register_prefix("hf")            # specs "hf:<rest>"
    @register_extensions(".jsonl")    # local file paths by extension
"""

from __future__ import annotations

from typing import Callable

_CALIBRATION: dict[str, Callable] = {}
_ALIASES: dict[str, str] = {}
_PREFIX: dict[str, Callable] = {}
_EXTENSIONS: dict[str, Callable] = {}
_EVAL: dict[str, Callable] = {}
_DEFAULT_FILE: list[Callable] = []


def register_calibration(name: str, *, aliases: tuple[str, ...] = ()):
    def deco(fn):
        _CALIBRATION[name] = fn
        for alias in aliases:
            _ALIASES[alias] = name
        return fn

    return deco


def register_prefix(prefix: str):
    def deco(fn):
        _PREFIX[prefix] = fn
        return fn

    return deco


def register_extensions(*exts: str, default: bool = False):
    """Local files by (lower-case) extension; ``default=True``: also files with any other extension."""

    def deco(fn):
        for ext in exts:
            _EXTENSIONS[ext] = fn
        if default:
            _DEFAULT_FILE[:] = [fn]
        return fn

    return deco


def register_eval(name: str):
    def deco(fn):
        _EVAL[name] = fn
        return fn

    return deco


def canonical_name(name: str) -> str | None:
    key = name.strip().lower()
    if key in _CALIBRATION:
        return key
    return _ALIASES.get(key)


def calibration_adapter(name: str) -> Callable | None:
    key = canonical_name(name)
    return _CALIBRATION.get(key) if key else None


def prefix_adapter(prefix: str) -> Callable | None:
    return _PREFIX.get(prefix)


def file_adapter(ext: str) -> Callable | None:
    fn = _EXTENSIONS.get(ext.lower())
    if fn is None and _DEFAULT_FILE:
        fn = _DEFAULT_FILE[0]
    return fn


def eval_adapter(name: str) -> Callable | None:
    key = name.strip().lower()
    return _EVAL.get(key) or _EVAL.get(_ALIASES.get(key, ""))


def calibration_names() -> list[str]:
    return sorted(_CALIBRATION)


def prefixes() -> list[str]:
    return sorted(_PREFIX)


def extensions() -> list[str]:
    return sorted(_EXTENSIONS)


def eval_names() -> list[str]:
    return sorted(_EVAL)
