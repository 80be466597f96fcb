"""The experiment matrix: which rows (prune data × fine-tune data) and which settings, from a small TOML
file or the default study:

| experiment | prune (calibration) data | fine-tune data |
|---|---|---|
| 1 | wikitext2 | wikitext2 |
| 2 | squad | squad |
| 3 | wikitext2 | squad |
| 4 | mix:wikitext2=0.5,squad=0.5 | squad |

plus the dense model and every pruned model before fine-tuning as baselines, all scored on the same
tasks. A row's `prune` is any `--calibration_dataset`, its `finetune` any `finetune --dataset`, and
its `template` (optional) a `finetune --template`.

    sparsity_ratio = 0.5
    tasks = "squad,gsm8k,boolq,wikitext2"
    [prune]      # PruneConfig fields, e.g. nsamples = 16
    [finetune]   # FinetuneConfig fields, e.g. max_steps = 50
    [eval]       # task_limit, num_fewshot, max_gen_toks, batch_size
    [[rows]]
    name = "1"
    prune = "wikitext2"
    finetune = "wikitext2"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..config import EvalConfig, FinetuneConfig, PruneConfig
from ..errors import UserError

DEFAULT_ROWS = (
    ("1", "wikitext2", "wikitext2"),
    ("2", "squad", "squad"),
    ("3", "wikitext2", "squad"),
    ("4", "mix:wikitext2=0.5,squad=0.5", "squad"),
)
DEFAULT_TASKS = "squad,gsm8k,boolq,wikitext2"
EVAL_KEYS = ("task_limit", "num_fewshot", "max_gen_toks", "batch_size", "seqlen")


@dataclass
class Row:
    name: str
    prune: str  # calibration source
    finetune: str  # fine-tuning dataset
    template: str | None = None


@dataclass
class Matrix:
    rows: list[Row]
    sparsity_ratio: float = 0.5
    sparsity_type: str = "unstructured"
    tasks: str = DEFAULT_TASKS
    prune: dict[str, Any] = field(default_factory=dict)  # PruneConfig fields
    finetune: dict[str, Any] = field(default_factory=dict)  # FinetuneConfig fields
    eval: dict[str, Any] = field(default_factory=dict)  # EVAL_KEYS


def _check_keys(section: str, values: dict, allowed: set[str], path: str) -> None:
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise UserError(f"--config {path!r}: [{section}] has unknown key {unknown[0]!r}; known: {', '.join(sorted(allowed))}")


def _check_types(section: str, values: dict, defaults: object, path: str) -> None:
    """Each value of the type its setting's default has (an int where a float is expected is fine)."""
    for key, value in values.items():
        default = getattr(defaults, key, None)
        if default is None:
            continue
        expected = type(default)
        ok = isinstance(value, bool) if expected is bool else (
            isinstance(value, (int, float)) and not isinstance(value, bool) if expected is float else
            isinstance(value, expected) and not isinstance(value, bool))
        if not ok:
            raise UserError(f"--config {path!r}: [{section}] {key} = {value!r}: expected {expected.__name__}, "
                            f"e.g. {key} = {default!r}")


def load_matrix(path: str | None, overrides: dict[str, Any]) -> Matrix:
    """The matrix of `path` (None: the default study), with the command line's size flags on top."""
    data: dict[str, Any] = {}
    if path:
        try:
            data = tomllib.loads(Path(path).expanduser().read_text())
        except OSError as exc:
            raise UserError(f"--config {path!r}: cannot read it ({exc.strerror or exc}); check the path") from None
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"--config {path!r}: not valid TOML ({exc}); fix the file") from None
    where = path or "default"
    _check_keys("top level", data, {"rows", "sparsity_ratio", "sparsity_type", "tasks", "prune", "finetune", "eval"}, where)
    # what the experiment itself sets (the model, the data, where cells go, how the command runs) is not a setting
    run_fields = {"model", "data_dir", "device", "cache_dir", "progress", "overwrite"}
    prune_fields = {f.name for f in fields(PruneConfig)} - run_fields - {
        "sparsity_ratio", "sparsity_type", "calibration_dataset", "save", "save_model", "tasks", "resume", "eval"}
    # keep_adapter: an adapter directory is no model the evaluation can load
    finetune_fields = {f.name for f in fields(FinetuneConfig)} - run_fields - {"dataset", "output", "template", "keep_adapter"}
    for name in ("prune", "finetune", "eval"):
        if not isinstance(data.get(name, {}), dict):
            raise UserError(f"--config {where!r}: {name} must be a table ([{name}] with key = value lines)")
    if not isinstance(data.get("rows", []), list):
        raise UserError(f"--config {where!r}: rows must be an array of tables ([[rows]] sections)")
    sections = {name: dict(data.get(name, {})) for name in ("prune", "finetune", "eval")}
    _check_keys("prune", sections["prune"], prune_fields, where)
    _check_keys("finetune", sections["finetune"], finetune_fields, where)
    _check_keys("eval", sections["eval"], set(EVAL_KEYS), where)
    _check_types("prune", sections["prune"], PruneConfig(), where)
    _check_types("finetune", sections["finetune"], FinetuneConfig(), where)
    _check_types("eval", sections["eval"], EvalConfig(), where)
    for key, kind in (("sparsity_ratio", (int, float)), ("sparsity_type", str), ("tasks", str)):
        if key in data and (not isinstance(data[key], kind) or isinstance(data[key], bool)):
            raise UserError(f"--config {where!r}: {key} = {data[key]!r} has the wrong type; e.g. sparsity_ratio = 0.5, "
                            "sparsity_type = \"2:4\", tasks = \"squad,boolq\"")
    rows = []
    for number, raw in enumerate(data.get("rows", []), 1):
        if not isinstance(raw, dict) or not {"prune", "finetune"} <= set(raw):
            raise UserError(f"--config {where!r}: row {number} needs prune = \"...\" and finetune = \"...\"")
        _check_keys(f"rows {number}", raw, {"name", "prune", "finetune", "template"}, where)
        rows.append(Row(str(raw.get("name", number)), str(raw["prune"]), str(raw["finetune"]), raw.get("template")))
    rows = rows or [Row(*row) for row in DEFAULT_ROWS]
    names = [row.name for row in rows]
    if len(set(names)) != len(names):
        raise UserError(f"--config {where!r}: row names repeat ({', '.join(names)}); give each row its own name")
    matrix = Matrix(rows=rows, sparsity_ratio=float(data.get("sparsity_ratio", 0.5)),
                    sparsity_type=str(data.get("sparsity_type", "unstructured")), tasks=str(data.get("tasks", DEFAULT_TASKS)),
                    prune=sections["prune"], finetune=sections["finetune"], eval=sections["eval"])
    for key, value in overrides.items():  # command-line sizes win over the file
        if value is None:
            continue
        if key == "sparsity_ratio":
            matrix.sparsity_ratio = value
        elif key in ("nsamples", "seqlen"):
            matrix.prune[key] = value
        elif key in ("max_steps", "finetune_seqlen", "lora"):
            matrix.finetune["seqlen" if key == "finetune_seqlen" else key] = value
        elif key in EVAL_KEYS:
            matrix.eval[key] = value
        elif key == "tasks":
            matrix.tasks = value
    return matrix
