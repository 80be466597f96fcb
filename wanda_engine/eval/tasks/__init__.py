"""`--tasks`: names → resolved tasks, checked before any model is loaded.

The engine's own definitions (one file each) come first: gsm8k, boolq and squad read local files in
the official formats (--data_dir) with lm-eval's prompts and metrics; wikitext2, c4 and a text file
path are scored with the engine's perplexity. Any other name, and one of ours whose files are absent,
is passed to lm-eval's own task registry, which downloads its data: that needs the hub.
"""

from __future__ import annotations

from wanda_engine.data.hub import hub_reachable, hub_state
from wanda_engine.errors import UserError

from . import boolq, gsm8k, perplexity, squad  # noqa: F401  (entries register themselves)
from .base import TASKS, TaskRequest, TaskSpec

# The zero-shot tasks of the Wanda paper (Sun et al., 2023), as lm-eval names them.
GROUPS = {
    "wanda_zero_shot": ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"),
}
# lm-eval's names for our tasks, used when their local files are absent.
UPSTREAM_NAMES = {"squad": "squadv2", "gsm8k": "gsm8k", "boolq": "boolq"}
LOCAL_FILES = {"squad": "squad/dev-v2.0.json", "gsm8k": "gsm8k/test.jsonl", "boolq": "boolq/dev.jsonl"}

__all__ = ["GROUPS", "TASKS", "TaskRequest", "TaskSpec", "evaluation_files", "resolve_tasks", "task_names"]


def evaluation_files(data_dir: str | None) -> list[str]:
    """The local files the offline tasks score (never to be fine-tuned or calibrated on by accident)."""
    from wanda_engine.data.wikitext2 import local_test_file

    from .base import scored_file

    found = [scored_file(name, data_dir, entry.SCORED_SPLITS, entry.EXTS)
             for name, entry in (("squad", squad), ("gsm8k", gsm8k), ("boolq", boolq))]
    found.append(local_test_file(data_dir))
    return [path for path in found if path]


def task_names(spec: str) -> list[str]:
    """'a,b,group' → task names in order, groups expanded, repeats dropped."""
    names: list[str] = []
    for raw in (spec or "").split(","):
        name = raw.strip()
        if not name:
            continue
        for member in GROUPS.get(name.lower(), (name,)):
            if member not in names:
                names.append(member)
    if not names:
        raise UserError(f"--tasks {spec!r}: no task named; e.g. --tasks wikitext2,squad,gsm8k,boolq")
    return names


def resolve_tasks(spec: str, request: TaskRequest) -> list[TaskSpec]:
    """Every task of `spec` resolved; a one-line UserError for the first that cannot be run."""
    if request.num_fewshot is not None and request.num_fewshot < 0:
        raise UserError(f"--num_fewshot {request.num_fewshot}: must be 0 or more")
    resolved, upstream = [], []
    for name in task_names(spec):
        canonical = TASKS.canonical(name.lower())
        if canonical is not None:
            task = TASKS.get(canonical)(request, canonical)
        else:
            task = perplexity.text_file(name, request)
        if task is None:
            task = TaskSpec(name=name, kind="lm_eval", upstream=UPSTREAM_NAMES.get(canonical, name),
                            num_fewshot=request.num_fewshot, source="")
            upstream.append((name, canonical, task))
        resolved.append(task)
    if upstream:
        _check_upstream(upstream, request)
    return resolved


def _check_upstream(upstream: list[tuple[str, str | None, TaskSpec]], request: TaskRequest) -> None:
    """Tasks from lm-eval's own registry: the hub must answer, and the names must be lm-eval's."""
    name, canonical, _ = upstream[0]
    if not hub_reachable():
        if canonical in LOCAL_FILES:
            where = f"--data_dir {request.data_dir!r} has no {LOCAL_FILES[canonical]}" if request.data_dir else "no --data_dir given"
            raise UserError(f"--tasks {name}: {where} and the Hugging Face hub is not reachable ({hub_state()}); "
                            f"pass --data_dir DIR containing {LOCAL_FILES[canonical]}")
        offline = ", ".join(TASKS.names())
        raise UserError(f"--tasks {name}: not one of the offline tasks ({offline}, or a text file) and the Hugging "
                        f"Face hub is not reachable ({hub_state()}) to fetch lm-eval's; use an offline task")
    from lm_eval.tasks import TaskManager

    manager = TaskManager()
    known, collections = set(manager.all_tasks), set(manager.all_groups) | set(manager.all_tags)
    for name, _, task in upstream:
        if task.upstream in collections:
            raise UserError(f"--tasks {name}: an lm-eval group or tag, which this command does not score as one; list its "
                            "tasks by name (`lm-eval ls tasks`)")
        if task.upstream not in known:
            raise UserError(f"--tasks {name}: unknown task (neither the engine's: {', '.join(TASKS.names())}, "
                            f"nor lm-eval's, nor a text file); see `lm-eval ls tasks`")
        task.source = f"lm-eval's own {task.upstream} task (data from the Hugging Face hub)"
