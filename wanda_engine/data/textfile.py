"""A local plain-text file (.txt, .raw, .tokens, or any extension not claimed by another adapter).

Read whole, tokenized once, windows drawn with the WikiText-2 reference procedure.
"""

from __future__ import annotations

from .base import CalibrationSet, Request
from .files import read_text
from .registry import FILE_TYPES
from .sampling import windows_set


@FILE_TYPES.register(".txt", ".raw", ".tokens", fallback=True)
def load(req: Request, path: str) -> CalibrationSet:
    text = read_text(path, "calibration text file")
    return windows_set(text, req, f"text file {path} read whole")
