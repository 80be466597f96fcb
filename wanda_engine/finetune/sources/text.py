"""Running text: WikiText-2's train split (never its test split, which perplexity scores), or any text
file (.txt/.raw/.tokens)."""

from __future__ import annotations

import os

from wanda_engine.data.files import first_file, read_text, subdir
from wanda_engine.data.wikitext2 import TRAIN_FILES, train_text

from .base import SOURCES, FinetuneData


@SOURCES.register("wikitext2", aliases=("wikitext",))
def load(data_dir: str | None, name: str) -> FinetuneData:
    path = first_file(subdir(data_dir, "wikitext2"), TRAIN_FILES)
    text, source = train_text(data_dir)
    return FinetuneData(None, text, source, [path] if path else [])


def text_file(path: str) -> FinetuneData:
    expanded = os.path.expanduser(path)
    text = read_text(expanded, "fine-tuning text file")
    return FinetuneData(None, text, f"text file {expanded} ({len(text):,} characters)", [expanded])
