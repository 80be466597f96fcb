"""WikiText-2 (wikitext-2-raw-v1): calibration windows from the train split, evaluation text from test.

Local layout: DIR/wikitext2/wiki.{train,valid,test}.raw (or the tokenized .tokens files).
"""

from __future__ import annotations

import os

from .base import CalibrationSet, Request
from .files import first_file, read_hf_rows, read_text, subdir
from .hub import load_hub_dataset
from .registry import CALIBRATION, EVAL_TEXTS
from .sampling import windows_set

HUB = ("wikitext", "wikitext-2-raw-v1")
TRAIN_FILES = ("wiki.train.raw", "wiki.train.tokens")
TEST_FILES = ("wiki.test.raw", "wiki.test.joined.txt", "wiki.test.tokens")


def _train_hint(data_dir: str | None) -> str:
    folder = subdir(data_dir, "wikitext2")
    valid = first_file(folder, ("wiki.valid.raw", "wiki.valid.tokens"))
    example = valid or ".../wikitext2/wiki.valid.tokens"
    return (
        f"pass --data_dir DIR containing wikitext2/wiki.train.raw, or a text file path such as {example} "
        f"as the calibration source"
    )


def train_text(data_dir: str | None) -> tuple[str, str]:
    """The train split joined with " " (the reference's calibration text) and where it came from."""
    path = first_file(subdir(data_dir, "wikitext2"), TRAIN_FILES)
    if path:
        rows = read_hf_rows(path, "WikiText-2 train file")
        return " ".join(rows), f"wikitext2 train split from {path} ({len(rows):,} rows joined with ' ')"
    ds = load_hub_dataset("wikitext2: no train split reachable", _train_hint(data_dir), *HUB, split="train")
    rows = list(ds["text"])
    return " ".join(rows), f"wikitext2 train split from Hugging Face {HUB[0]}/{HUB[1]} ({len(rows):,} rows joined with ' ')"


@CALIBRATION.register("wikitext2", aliases=("wikitext", "wikitext-2", "wikitext2-raw", "wikitext-2-raw-v1"))
def load(req: Request, arg: str) -> CalibrationSet:
    text, source = train_text(req.data_dir)
    return windows_set(text, req, source)


def local_test_file(data_dir: str | None) -> str | None:
    return first_file(subdir(data_dir, "wikitext2"), TEST_FILES)


@EVAL_TEXTS.register("wikitext2")
def eval_text(data_dir: str | None) -> tuple[str, str]:
    """The test split joined with "\\n\\n", as the reference's perplexity tokenizes it."""
    path = local_test_file(data_dir)
    if path and os.path.basename(path) == "wiki.test.joined.txt":
        return read_text(path, "WikiText-2 test file"), f"wikitext2 test split from {path} (rows already joined with '\\n\\n')"
    if path:
        rows = read_hf_rows(path, "WikiText-2 test file")
        note = " (tokenized wikitext-2-v1 text with <unk>: not comparable to raw-v1 figures)" if path.endswith(".tokens") else ""
        return "\n\n".join(rows), f"wikitext2 test split from {path} ({len(rows):,} rows joined with '\\n\\n'){note}"
    hint = "pass --data_dir DIR containing wikitext2/wiki.test.raw, or --eval builtin or a text file path"
    ds = load_hub_dataset("wikitext2 test split not reachable", hint, *HUB, split="test")
    rows = list(ds["text"])
    return "\n\n".join(rows), f"wikitext2 test split from Hugging Face {HUB[0]}/{HUB[1]} ({len(rows):,} rows joined with '\\n\\n')"
