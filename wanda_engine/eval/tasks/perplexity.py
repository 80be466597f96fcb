"""Perplexity "tasks": wikitext2 and c4 (and any text file path, see `text_file`) scored with the
engine's own perplexity, the reference protocol (wanda_engine.eval.perplexity), beside the lm-eval
scores. The text is read when the task is resolved, so a missing file fails before the model loads."""

from __future__ import annotations

import os

from wanda_engine import data

from .base import TASKS, TaskRequest, TaskSpec


def _spec(name: str, text_spec: str, data_dir: str | None, path: str | None = None) -> TaskSpec:
    text, description = data.load_eval_text(text_spec, data_dir=data_dir)
    return TaskSpec(name=name, kind="perplexity", source=f"engine perplexity (reference protocol) on {description}",
                    text=text, files={"test": path} if path else {})


@TASKS.register("wikitext2", "c4", aliases=("wikitext",))
def resolve(request: TaskRequest, name: str) -> TaskSpec:
    local = data.wikitext2.local_test_file(request.data_dir) if name == "wikitext2" else None
    return _spec(name, name, request.data_dir, local)


def text_file(path: str, request: TaskRequest) -> TaskSpec | None:
    """A text file path as a perplexity task, or None when `path` is no file."""
    if not os.path.isfile(os.path.expanduser(path)):
        return None
    return _spec(os.path.basename(path), path, request.data_dir, os.path.expanduser(path))
