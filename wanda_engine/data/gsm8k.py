"""GSM8K: the question text only (answers are never used for pruning); variable-length samples."""

from __future__ import annotations

from .base import CalibrationSet, Request
from .registry import CALIBRATION
from .sampling import records_set
from .tasksource import task_records


def _text(record: dict) -> str:
    return str(record["question"] or "")


@CALIBRATION.register("gsm8k")
def load(req: Request, arg: str) -> CalibrationSet:
    records, where = task_records("gsm8k", req.data_dir, ("question",), _text, ("gsm8k", "main"))
    return records_set(records, req, f"{where}; text = question")
