"""`--dataset`: a named fine-tuning source (its train split from --data_dir) or a file: a text file
(.txt/.raw/.tokens, language modelling) or JSON lines with context/question/answer fields."""

from __future__ import annotations

import os

from wanda_engine.data.files import read_json_lines
from wanda_engine.errors import UserError

from . import records, squad, text  # noqa: F401  (sources register themselves)
from .base import SOURCES, Example, FinetuneData

__all__ = ["SOURCES", "Example", "FinetuneData", "load_finetune_data"]

RECORD_FIELDS = ("context", "question", "answer")


def load_finetune_data(spec: str, data_dir: str | None) -> FinetuneData:
    name = (spec or "").strip()
    canonical = SOURCES.canonical(name.lower())
    if canonical is not None:
        entry = SOURCES.get(canonical)
        return entry(data_dir) if canonical == "squad" else entry(data_dir, canonical)
    path = os.path.expanduser(name)
    if not os.path.isfile(path):
        raise UserError(f"--dataset {spec!r}: neither one of {', '.join(SOURCES.names())} nor an existing file; "
                        "pass a name or a .txt/.jsonl path")
    if path.lower().endswith((".jsonl", ".jsonl.gz")):
        rows = read_json_lines(path, "fine-tuning file")
        for number, row in enumerate(rows, 1):
            if not all(isinstance(row.get(f), str) for f in ("question", "answer")):
                raise UserError(f"fine-tuning file {path!r} record {number} needs string fields question and answer "
                                "(context optional); or pass a text file")
        examples = [Example(row.get("context") or "", row["question"], row["answer"]) for row in rows]
        return FinetuneData(examples, None, f"{len(examples):,} records from {path}", [path])
    return text.text_file(path)
