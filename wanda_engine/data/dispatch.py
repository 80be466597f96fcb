"""Spec string → adapter: ``prefix:rest`` adapters, registered names, then local file paths by extension."""

from __future__ import annotations

import os

from wanda_engine.errors import UserError

from . import registry
from .base import CalibrationSet, Request


def _extension(path: str) -> str:
    name = os.path.basename(path).lower()
    for ext in sorted(registry.extensions(), key=len, reverse=True):
        if name.endswith(ext):
            return ext
    return os.path.splitext(name)[1]


def spec_forms() -> str:
    names = ", ".join(registry.calibration_names())
    return f"{names}, hf:<name>[:<config>[:<split>]], mix:<source>=<weight>,..., or a local file path"


def load_one(spec: str, req: Request) -> CalibrationSet:
    text = spec.strip()
    if not text:
        raise UserError(f"calibration source {spec!r} is empty; use one of: {spec_forms()}")
    head, colon, rest = text.partition(":")
    if colon:
        fn = registry.prefix_adapter(head.strip().lower())
        if fn is not None:
            return fn(req, rest)
    name = registry.canonical_name(text)
    if name is not None:
        return registry.calibration_adapter(name)(req, name)
    path = os.path.expanduser(text)
    if os.path.isfile(path):
        fn = registry.file_adapter(_extension(path))
        return fn(req, path)
    if os.path.isdir(path):
        raise UserError(
            f"calibration source {spec!r} is a directory; pass it as --data_dir {text} together with a source name "
            f"({', '.join(registry.calibration_names())}) or pass a file path"
        )
    if os.sep in text or "/" in text or _extension(text) in registry.extensions():
        raise UserError(f"calibration file {text!r} does not exist; check the path")
    raise UserError(f"unknown calibration source {spec!r}; use one of: {spec_forms()}")
