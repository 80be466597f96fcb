"""SQuAD v2 train split (DIR/squad/*train*.json, official JSON): answerable questions with their first
answer, in file order."""

from __future__ import annotations

from wanda_engine.data.files import read_json
from wanda_engine.errors import UserError
from wanda_engine.eval.tasks.base import split_file

from .base import SOURCES, Example, FinetuneData


@SOURCES.register("squad", aliases=("squad_v2", "squadv2", "squad2"))
def load(data_dir: str | None) -> FinetuneData:
    path = split_file("squad", data_dir, "train", (".json", ".json.gz"))
    if path is None:
        raise UserError(f"--dataset squad: no squad/*train*.json under --data_dir {data_dir!r}; pass --data_dir DIR "
                        "containing squad/train-v2.0.json (official SQuAD JSON)")
    examples = []
    try:
        for article in read_json(path, "SQuAD file")["data"]:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    if qa.get("answers"):
                        examples.append(Example(paragraph["context"], qa["question"], qa["answers"][0]["text"]))
    except (KeyError, TypeError, IndexError):
        raise UserError(f"SQuAD file {path!r} is not in the official layout (data → paragraphs → qas → answers); "
                        "pass the official train-v2.0.json") from None
    return FinetuneData(examples, None, f"squad {len(examples):,} answerable questions from {path} (train split)", [path])
