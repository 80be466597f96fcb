"""Shared loader for task datasets stored as JSON lines locally (DIR/<name>/<split>.jsonl) or on the hub."""

from __future__ import annotations

from typing import Callable

from wanda_engine.errors import UserError

from .files import list_files, pick_split_file, read_json_lines, subdir
from .hub import load_hub_dataset
from .sampling import Records


def task_records(
    name: str,
    data_dir: str | None,
    fields: tuple[str, ...],
    to_text: Callable[[dict], str],
    hub: tuple[str, str | None],
    split: str = "train",
) -> tuple[Records, str]:
    """Records of the ``split`` split (another present split file stands in when absent locally).

    Local files come first (DIR/name/*.jsonl), then the hub; the answer fields are never read.
    """
    folder = subdir(data_dir, name)
    path, note = pick_split_file(list_files(folder, (".jsonl", ".jsonl.gz")), split)
    if path:
        records = read_json_lines(path, f"{name} file")
        for i, record in enumerate(records):
            missing = [f for f in fields if f not in record]
            if missing:
                raise UserError(
                    f"{name} file {path!r} record {i + 1} lacks field {missing[0]!r}; {name} files need the fields "
                    f"{', '.join(fields)} (official layout)"
                )
        where = f"{name} {len(records):,} records from {path}" + (f" ({note})" if note else "")
        return Records(len(records), lambda i: to_text(records[i]), where), where
    hint = f"pass --data_dir DIR containing {name}/{split}.jsonl (or another split file of {name})"
    ds = load_hub_dataset(f"{name} {split} split not reachable", hint, hub[0], hub[1], split=split)
    where = f"{name} Hugging Face {hub[0]}" + (f" ({hub[1]})" if hub[1] else "") + f" split={split} ({len(ds):,} records)"
    return Records(len(ds), lambda i: to_text(ds[i]), where), where
