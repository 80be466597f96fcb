"""GSM8K and BoolQ train splits (DIR/NAME/train.jsonl, official JSON lines)."""

from __future__ import annotations

from wanda_engine.data.files import read_json_lines
from wanda_engine.errors import UserError
from wanda_engine.eval.tasks.base import split_file

from .base import SOURCES, Example, FinetuneData

FIELDS = {
    "gsm8k": (("question", "answer"), lambda r: Example("", r["question"], r["answer"])),
    "boolq": (("passage", "question", "answer"),
              lambda r: Example(r["passage"], r["question"].rstrip("?") + "?", "yes" if r["answer"] else "no")),
}


@SOURCES.register("gsm8k", "boolq")
def load(data_dir: str | None, name: str) -> FinetuneData:
    path = split_file(name, data_dir, "train", (".jsonl", ".jsonl.gz"))
    if path is None:
        raise UserError(f"--dataset {name}: no {name}/train.jsonl under --data_dir {data_dir!r}; pass --data_dir DIR "
                        f"containing {name}/train.jsonl (official JSON lines)")
    fields, to_example = FIELDS[name]
    records = read_json_lines(path, f"{name} file")
    for number, record in enumerate(records, 1):
        missing = [f for f in fields if f not in record]
        if missing:
            raise UserError(f"{name} file {path!r} record {number} lacks field {missing[0]!r}; official {name} "
                            f"records have {', '.join(fields)}")
    examples = [to_example(record) for record in records]
    return FinetuneData(examples, None, f"{name} {len(examples):,} records from {path} (train split)", [path])
