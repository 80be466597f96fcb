"""An offline corpus present on every Python install: the standard library's pydoc topic texts.

``pydoc_data.topics.topics`` (help texts of the language reference), keys sorted; the first topics holding
~80% of the characters are the calibration part, the remaining topics the held-out evaluation part, so the
two never share a topic. The split depends only on the Python version's topics.
"""

from __future__ import annotations

import sys

from wanda_engine.errors import UserError

from .base import CalibrationSet, Request
from .registry import CALIBRATION, EVAL_TEXTS
from .sampling import windows_set

CALIBRATION_FRACTION = 0.8


def _topics() -> dict[str, str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise UserError(
            "builtin corpus unavailable: this Python lacks pydoc_data.topics; pass another calibration/eval source "
            "(e.g. a text file path or --data_dir DIR)"
        ) from None
    return topics


def split_keys() -> tuple[list[str], list[str]]:
    """(calibration keys, evaluation keys): sorted keys cut where ~80% of the characters are reached."""
    topics = _topics()
    keys = sorted(topics)
    total = sum(len(topics[k]) for k in keys)
    acc, cut = 0, len(keys)
    for n, key in enumerate(keys):
        if acc >= CALIBRATION_FRACTION * total:
            cut = n
            break
        acc += len(topics[key])
    cut = max(1, min(cut, len(keys) - 1))
    return keys[:cut], keys[cut:]


def _join(keys: list[str]) -> str:
    topics = _topics()
    return "\n\n".join(topics[k] for k in keys)


def _version() -> str:
    return f"Python {sys.version_info.major}.{sys.version_info.minor}"


@CALIBRATION.register("builtin")
def load(req: Request, arg: str) -> CalibrationSet:
    cal, ev = split_keys()
    source = (
        f"builtin corpus: pydoc_data.topics of {_version()}, calibration part = first {len(cal)} of "
        f"{len(cal) + len(ev)} sorted topics ({cal[0]!r}..{cal[-1]!r}) joined with '\\n\\n'"
    )
    return windows_set(_join(cal), req, source)


@EVAL_TEXTS.register("builtin")
def eval_text(data_dir: str | None) -> tuple[str, str]:
    cal, ev = split_keys()
    text = _join(ev)
    return text, (
        f"builtin corpus: pydoc_data.topics of {_version()}, held-out part = last {len(ev)} of {len(cal) + len(ev)} "
        f"sorted topics ({ev[0]!r}..{ev[-1]!r}) joined with '\\n\\n', {len(text):,} characters; "
        f"no topic is shared with the builtin calibration part"
    )
