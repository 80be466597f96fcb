"""What a task resolves to before any model is loaded: the files it reads, its lm-eval task definition
(or the engine's perplexity), its few-shot count; and the registry of tasks the engine defines itself.

Entries register with ``@TASKS.register(name)`` and are called with a ``TaskRequest``; they return a
``TaskSpec``, or None when their local files are absent (the task then comes from lm-eval's own
registry, which needs the hub).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from wanda_engine.data.files import list_files, names_split, subdir
from wanda_engine.errors import UserError
from wanda_engine.registry import Registry

TASKS = Registry("task", "--tasks")


@dataclass
class TaskRequest:
    data_dir: str | None = None
    num_fewshot: int | None = None  # None: the task's own default
    squad_unanswerable: bool = False  # SQuAD v2: score the unanswerable questions too


@dataclass
class TaskSpec:
    """One task, resolved. `kind`: "lm_eval" (an lm-eval task: `lm_eval_config` is the engine's offline
    definition, or `upstream` names a task of lm-eval's registry) or "perplexity" (the engine's perplexity on `text`)."""

    name: str
    kind: str
    source: str  # in words: which definition, which file, which split
    files: dict[str, str] = field(default_factory=dict)  # split → path ("train": few-shot examples only)
    num_fewshot: int | None = None
    lm_eval_config: dict[str, Any] | None = None
    upstream: str | None = None
    text: str | None = field(default=None, repr=False)  # a perplexity task's text

    @property
    def scored_files(self) -> list[str]:
        """The files whose examples are scored (not the few-shot file)."""
        return [path for split, path in self.files.items() if split != "train"]


def split_file(name: str, data_dir: str | None, split: str, exts: tuple[str, ...]) -> str | None:
    """DIR/name/<file naming `split`> (e.g. gsm8k/test.jsonl), or None. Unlike calibration, evaluation
    never lets another split stand in: scoring on a training file would be silently wrong."""
    files = [path for path in list_files(subdir(data_dir, name), exts) if names_split(path, split)]
    return files[0] if files else None


def fewshot_file(name: str, data_dir: str | None, split: str, exts: tuple[str, ...], shots: int,
                 test_file: str) -> str | None:
    """The few-shot example file (the train split); a one-line error when shots are asked for and it is
    absent (the examples must not come from the file being scored)."""
    path = split_file(name, data_dir, split, exts)
    if path is None and shots > 0:
        raise UserError(
            f"--tasks {name}: {shots}-shot needs few-shot examples from {name}/{split}{exts[0]} beside {test_file}, "
            f"which is absent; add it or pass --num_fewshot 0"
        )
    return path


def shots(request: TaskRequest, default: int) -> int:
    return default if request.num_fewshot is None else request.num_fewshot


def scored_file(name: str, data_dir: str | None, file_splits: tuple[str, ...], exts: tuple[str, ...]) -> str | None:
    """The file an offline task scores: the first in DIR/name/ naming one of `file_splits`, or None."""
    return next((path for wanted in file_splits if (path := split_file(name, data_dir, wanted, exts))), None)


def resolve_offline(name: str, request: TaskRequest, *, split: str, file_splits: tuple[str, ...], exts: tuple[str, ...],
                    default_shots: int, source: str, make_config: Callable[[str, str | None, int], dict]) -> TaskSpec | None:
    """An offline task over DIR/name/: the first file naming one of `file_splits` is scored (as lm-eval's
    `split`), few-shot examples come from the train file; None when no file is there. `source` is a
    format string with {file}; `make_config(scored file, train file or None, shots)` is the lm-eval config."""
    scored = scored_file(name, request.data_dir, file_splits, exts)
    if scored is None:
        return None
    num_fewshot = shots(request, default_shots)
    train = fewshot_file(name, request.data_dir, "train", exts, num_fewshot, scored)
    examples = f", {num_fewshot}-shot examples from {train}" if num_fewshot else ", 0-shot"
    return TaskSpec(name=name, kind="lm_eval", source=source.format(file=scored) + examples,
                    files={split: scored, **({"train": train} if train else {})}, num_fewshot=num_fewshot,
                    lm_eval_config=make_config(scored, train, num_fewshot))
