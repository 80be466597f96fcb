"""A local .jsonl / .json / .parquet file of records, loaded through ``datasets``.

Text per record from --text_field (default: a "text" field when present) or --text_template
(``str.format`` with the record's fields); variable-length samples like SQuAD (padding or packing).
"""

from __future__ import annotations

from wanda_engine.errors import UserError

from .base import CalibrationSet, Request, one_line
from .registry import register_extensions
from .sampling import Records, record_to_text, records_set


def dataset_records(ds, req: Request, where: str) -> tuple[Records, str]:
    """Records of a ``datasets.Dataset`` with the text chosen by --text_field / --text_template."""
    to_text, how = record_to_text(ds.column_names, req.text_field, req.text_template, where)
    return Records(len(ds), lambda i: to_text(ds[i]), where), how


@register_extensions(".jsonl", ".json", ".jsonl.gz", ".json.gz", ".parquet")
def load(req: Request, path: str) -> CalibrationSet:
    import datasets

    builder = "parquet" if path.lower().endswith(".parquet") else "json"
    quiet = not datasets.utils.logging.is_progress_bar_enabled()
    datasets.utils.logging.disable_progress_bar()
    try:
        ds = datasets.load_dataset(builder, data_files=path, split="train")
    except Exception as exc:
        kind = "Parquet" if builder == "parquet" else "JSON lines / a JSON list of records"
        raise UserError(f"cannot read {path!r} as {kind} ({one_line(exc)}); check the file") from None
    finally:
        if not quiet:
            datasets.utils.logging.enable_progress_bar()
    where = f"{path} ({len(ds):,} records, loaded with datasets '{builder}')"
    records, how = dataset_records(ds, req, path)
    return records_set(records, req, f"{where}; {how}")
