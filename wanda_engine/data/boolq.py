"""BoolQ: passage + question text (answers are never used for pruning); variable-length samples."""

from __future__ import annotations

from .base import CalibrationSet, Request
from .registry import CALIBRATION
from .sampling import records_set
from .tasksource import task_records


def _text(record: dict) -> str:
    return f"{record['passage'] or ''} {record['question'] or ''}".strip()


@CALIBRATION.register("boolq")
def load(req: Request, arg: str) -> CalibrationSet:
    records, where = task_records("boolq", req.data_dir, ("passage", "question"), _text, ("google/boolq", None))
    return records_set(records, req, f"{where}; text = f'{{passage}} {{question}}'")
