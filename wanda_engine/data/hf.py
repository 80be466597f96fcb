"""``hf:<name>[:<config>[:<split>]]``: any Hugging Face dataset (default split train) through ``datasets``.

Text per record from --text_field (default: a "text" field when present) or --text_template.
"""

from __future__ import annotations

from wanda_engine.errors import UserError

from .base import CalibrationSet, Request
from .hub import load_hub_dataset
from .jsonfile import dataset_records
from .registry import PREFIXES
from .sampling import records_set

USAGE = "hf:<name>[:<config>[:<split>]], e.g. hf:openai/gsm8k:main:train"


def parse(rest: str, spec: str) -> tuple[str, str | None, str]:
    parts = [p.strip() for p in rest.split(":", 2)]  # the split may hold ":" (train[:1000])
    if not parts[0] or any(p == "" for p in parts[1:]):
        raise UserError(f"calibration source {spec!r} is malformed; use {USAGE}")
    name = parts[0]
    config = parts[1] if len(parts) > 1 else None
    split = parts[2] if len(parts) > 2 else "train"
    return name, config, split


@PREFIXES.register("hf")
def load(req: Request, rest: str) -> CalibrationSet:
    name, config, split = parse(rest, req.spec)
    hint = "save the data as a local .jsonl/.parquet file and pass its path instead"
    ds = load_hub_dataset(f"calibration source {req.spec!r} not loadable", hint, name, config, split=split)
    where = f"Hugging Face {name}" + (f" ({config})" if config else "") + f" split={split} ({len(ds):,} records)"
    records, how = dataset_records(ds, req, f"{req.spec}")
    return records_set(records, req, f"{where}; {how}")
