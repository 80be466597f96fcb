"""SQuAD v2: context (+ question) text, answers never used; variable-length samples (padding or packing).

Local layout: DIR/squad/train-v2.0.json in the official nested format (data → paragraphs → qas), one
example per question like the Hugging Face rows; another *.json split file stands in when train is absent.
"""

from __future__ import annotations

from wanda_engine.config import SQUAD_TEXT_FORMATS
from wanda_engine.errors import UserError

from .base import CalibrationSet, Request
from .files import list_files, pick_split_file, read_json, subdir
from .hub import load_hub_dataset
from .registry import CALIBRATION
from .sampling import Records, records_set

HUB = "squad_v2"


def check_format(squad_format: str) -> str:
    if squad_format not in SQUAD_TEXT_FORMATS:
        raise UserError(f"--calibration_format {squad_format!r} is unknown; use one of: {', '.join(SQUAD_TEXT_FORMATS)}")
    return squad_format


def _text(template: str, context: str, question: str) -> str:
    return template.format(context=context, question=question)


def parse_official(obj, path: str) -> list[tuple[str, str]]:
    """(context, question) per question of an official SQuAD JSON object, in file order."""
    try:
        pairs = [
            (paragraph["context"], qa["question"])
            for article in obj["data"]
            for paragraph in article["paragraphs"]
            for qa in paragraph["qas"]
        ]
    except (KeyError, TypeError):
        raise UserError(
            f"SQuAD file {path!r} is not in the official layout (data → paragraphs → context/qas → question); "
            f"pass the official train-v2.0.json"
        ) from None
    return pairs

@CALIBRATION.register("squad", aliases=("squad_v2", "squad2", "squad-v2"))
def load(req: Request, arg: str) -> CalibrationSet:
    template = SQUAD_TEXT_FORMATS[check_format(req.squad_format)]
    path, note = pick_split_file(list_files(subdir(req.data_dir, "squad"), (".json", ".json.gz")), "train")
    if path:
        pairs = parse_official(read_json(path, "SQuAD file"), path)
        where = f"squad {len(pairs):,} questions from {path}" + (f" ({note})" if note else "")
        records = Records(len(pairs), lambda i: _text(template, *pairs[i]), where)
    else:
        hint = "pass --data_dir DIR containing squad/train-v2.0.json (official SQuAD JSON)"
        ds = load_hub_dataset("squad train split not reachable", hint, HUB, split="train")
        where = f"squad Hugging Face {HUB} split=train ({len(ds):,} questions)"
        records = Records(len(ds), lambda i: _text(template, ds[i]["context"], ds[i]["question"]), where)
    shown = template.replace("\n", "\\n")
    source = f"{where}; --calibration_format {req.squad_format}: text = f'{shown}' (answers unused)"
    return records_set(records, req, source)
