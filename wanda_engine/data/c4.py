"""C4 English (allenai/c4 "en"): calibration with the reference's document loop; validation text for ppl.

Local layout: DIR/c4/*.json[l][.gz], one JSON object per line with a "text" field. Calibration prefers files
with "train" in the name, evaluation files with "validation"; either falls back to all the c4 files present
(and the description says so).
"""

from __future__ import annotations

import os
import random

import torch

from wanda_engine.errors import UserError

from .base import CalibrationSet, Request
from .files import JSON_EXTS, list_files, names_split, read_json_lines, subdir
from .hub import load_hub_dataset
from .registry import CALIBRATION, EVAL_TEXTS
from .sampling import Records, tokenize_once, window_start

HUB = "allenai/c4"
TRAIN_SHARD = "en/c4-train.00000-of-01024.json.gz"
VALIDATION_SHARD = "en/c4-validation.00000-of-00008.json.gz"
EVAL_DOCS = 1100  # the reference joins the first 1100 validation documents


def _local_docs(data_dir: str | None, want: str) -> tuple[list[str], str] | None:
    files = list_files(subdir(data_dir, "c4"), JSON_EXTS)
    if not files:
        return None
    chosen = [f for f in files if names_split(f, want)]
    note = ""
    if not chosen:
        chosen = files
        note = f" (no file named *{want}* in {os.path.dirname(files[0])}: using all c4 files present"
        note += ", the same documents as the c4 evaluation text)" if want == "train" else ")"
    docs: list[str] = []
    for path in chosen:
        for i, record in enumerate(read_json_lines(path, "C4 file")):
            if "text" not in record:
                raise UserError(f"C4 file {path!r} record {i + 1} has no 'text' field; C4 files need one JSON object per line with a 'text' field")
            docs.append("" if record["text"] is None else str(record["text"]))
    names = ", ".join(chosen)
    return docs, f"c4 {len(docs):,} documents from {names}{note}"


def _hint(data_dir: str | None) -> str:
    return "pass --data_dir DIR containing c4/*.json or c4/*.json.gz (one JSON object per line with a 'text' field)"


def _train_records(data_dir: str | None) -> tuple[Records, str]:
    local = _local_docs(data_dir, "train")
    if local:
        docs, where = local
        return Records(len(docs), docs.__getitem__, where), where
    ds = load_hub_dataset("c4 train shard not reachable", _hint(data_dir), HUB, data_files={"train": TRAIN_SHARD}, split="train")
    where = f"c4 Hugging Face {HUB} {TRAIN_SHARD} ({len(ds):,} documents)"
    return Records(len(ds), lambda i: ds[i]["text"], where), where


def sample_documents(records: Records, req: Request) -> torch.Tensor:
    """The reference C4 loop: random documents until one tokenizes to more than seqlen; a random window in it.

    Documents found too short are remembered (not tokenized again; the random stream is unchanged), so the
    loop ends with an error once every document has proved too short.
    """
    if records.n < 1:
        raise UserError(f"calibration source {req.spec!r} is empty: {records.label} has no documents")
    seqlen = req.seqlen
    short: set[int] = set()
    longest = 0
    out = torch.empty((req.nsamples, seqlen), dtype=torch.int64)
    random.seed(req.seed)
    for k in range(req.nsamples):
        while True:
            i = random.randint(0, records.n - 1)
            if i in short:
                continue
            ids = tokenize_once(req.tokenizer, records.get(i))
            if ids.numel() > seqlen:
                break
            short.add(i)
            longest = max(longest, int(ids.numel()))
            if len(short) == records.n:
                raise UserError(
                    f"calibration source {req.spec!r}: none of the {records.n} documents has more than --seqlen "
                    f"{seqlen} tokens (the longest has {longest}); use --seqlen {max(longest - 1, 1)} or less, "
                    f"or a source with longer documents"
                )
        j = window_start(int(ids.numel()), seqlen)
        out[k] = ids[j : j + seqlen]
    return out


@CALIBRATION.register("c4", aliases=("allenai/c4",))
def load(req: Request, arg: str) -> CalibrationSet:
    records, where = _train_records(req.data_dir)
    input_ids = sample_documents(records, req)
    description = (
        f"{where}; reference C4 procedure: random.seed({req.seed}), per sample random documents until one "
        f"tokenizes to more than {req.seqlen} tokens, then a random window of {req.seqlen} tokens in it; no padding"
    )
    return CalibrationSet(input_ids, torch.ones_like(input_ids), description)


@EVAL_TEXTS.register("c4")
def eval_text(data_dir: str | None) -> tuple[str, str]:
    """The reference's C4 validation text: the first 1100 validation documents joined with ' '."""
    local = _local_docs(data_dir, "validation")
    if local:
        docs, where = local
    else:
        ds = load_hub_dataset(
            "c4 validation shard not reachable", _hint(data_dir) + ", or use --eval wikitext2 / builtin",
            HUB, data_files={"validation": VALIDATION_SHARD}, split="validation",
        )
        docs = list(ds.select(range(min(EVAL_DOCS, len(ds))))["text"])
        where = f"c4 Hugging Face {HUB} {VALIDATION_SHARD}"
    used = docs[:EVAL_DOCS]
    text = " ".join(used)
    return text, (
        f"{where}; first {len(used):,} documents joined with ' ' (the reference then keeps the first 256 x seqlen tokens)"
    )
