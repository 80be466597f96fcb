"""Spec string → adapter: ``prefix:rest`` adapters, registered names, then local file paths by extension."""

from __future__ import annotations

import os

from wanda_engine.errors import UserError

from .registry import CALIBRATION, FILE_TYPES, PREFIXES
from .base import CalibrationSet, Request


def _extension(path: str) -> str:
    name = os.path.basename(path).lower()
    for ext in sorted(FILE_TYPES.names(), key=len, reverse=True):
        if name.endswith(ext):
            return ext
    return os.path.splitext(name)[1]


def spec_forms() -> str:
    names = ", ".join(CALIBRATION.names())
    return f"{names}, hf:<name>[:<config>[:<split>]], mix:<source>=<weight>,..., or a local file path"


def load_one(spec: str, req: Request) -> CalibrationSet:
    text = spec.strip()
    if not text:
        raise UserError(f"calibration source {spec!r} is empty; use one of: {spec_forms()}")
    head, colon, rest = text.partition(":")
    if colon:
        fn = PREFIXES.find(head.strip().lower())
        if fn is not None:
            return fn(req, rest)
    name = CALIBRATION.canonical(text.lower())
    if name is not None:
        return CALIBRATION.get(name)(req, name)
    path = os.path.expanduser(text)
    if os.path.isfile(path):
        fn = FILE_TYPES.find(_extension(path))
        return fn(req, path)
    if os.path.isdir(path):
        raise UserError(
            f"calibration source {spec!r} is a directory; pass it as --data_dir {text} together with a source name "
            f"({', '.join(CALIBRATION.names())}) or pass a file path"
        )
    if os.sep in text or "/" in text or _extension(text) in FILE_TYPES.names():
        raise UserError(f"calibration file {text!r} does not exist; check the path")
    raise UserError(f"unknown calibration source {spec!r}; use one of: {spec_forms()}")
