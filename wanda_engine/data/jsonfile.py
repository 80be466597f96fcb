"""A local .jsonl / .json / .parquet file of records, loaded through ``datasets``.

Text per record from --text_field (default: a "text" field when present) or --text_template
(``str.format`` with the record's fields); variable-length samples like SQuAD (padding or packing).
"""

from __future__ import annotations

from wanda_engine.errors import UserError

from .base import CalibrationSet, Request, one_line, quiet_datasets
from .registry import FILE_TYPES
from .sampling import Records, record_to_text, records_set


def dataset_records(ds, req: Request, where: str) -> tuple[Records, str]:
    """Records of a ``datasets.Dataset`` with the text chosen by --text_field / --text_template."""
    to_text, how = record_to_text(ds.column_names, req.text_field, req.text_template, where)
    return Records(len(ds), lambda i: to_text(ds[i]), where), how


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost cause: datasets wraps a parse error into a generic 'error while generating' one."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    return exc


@FILE_TYPES.register(".jsonl", ".json", ".jsonl.gz", ".json.gz", ".parquet")
def load(req: Request, path: str) -> CalibrationSet:
    builder = "parquet" if path.lower().endswith(".parquet") else "json"
    try:
        with quiet_datasets() as datasets:
            ds = datasets.load_dataset(builder, data_files=path, split="train")
    except Exception as exc:
        kind = "Parquet" if builder == "parquet" else "JSON lines / a JSON list of records"
        raise UserError(f"cannot read {path!r} as {kind} ({one_line(_root_cause(exc))}); check the file") from None
    where = f"{path} ({len(ds):,} records, loaded with datasets '{builder}')"
    records, how = dataset_records(ds, req, path)
    return records_set(records, req, f"{where}; {how}")
