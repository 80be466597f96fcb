"""BoolQ, offline: lm-eval's `boolq` task (super_glue, version 2) over the official JSON lines
DIR/boolq/dev.jsonl (its validation split). Same prompt ("{passage}\\nQuestion: {question}?\\nAnswer:"),
0-shot default, the choice between " no" and " yes" by log-likelihood, `acc`. The official files say
`answer: true/false` where lm-eval's source says `label: 1/0`; that is the only conversion."""

from __future__ import annotations

from .base import TASKS, TaskRequest, TaskSpec, resolve_offline

EXTS = (".jsonl", ".jsonl.gz")
DEFAULT_SHOTS = 0
SCORED_SPLITS = ("dev", "val")  # file-name words of the scored file


def with_label(dataset):
    """The official `answer` (bool) as lm-eval's `label` (0 = no, 1 = yes); a `label` already there is kept."""
    if "label" in dataset.column_names:
        return dataset
    return dataset.map(lambda record: {"label": int(bool(record["answer"]))})


def lm_eval_config(dev_file: str, train_file: str | None, num_fewshot: int) -> dict:
    data_files = {"validation": dev_file, **({"train": train_file} if train_file else {})}
    return {
        "task": "boolq",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": data_files},
        "output_type": "multiple_choice",
        **({"training_split": "train"} if train_file else {}),
        "validation_split": "validation",
        "process_docs": with_label,
        "doc_to_text": "{{passage}}\nQuestion: {{question}}?\nAnswer:",
        "doc_to_target": "label",
        "doc_to_choice": ["no", "yes"],
        "metric_list": [{"metric": "acc"}],
        "num_fewshot": num_fewshot,
        "metadata": {"version": 2.0},
    }


@TASKS.register("boolq")
def resolve(request: TaskRequest, name: str) -> TaskSpec | None:
    return resolve_offline("boolq", request, split="validation", file_splits=SCORED_SPLITS, exts=EXTS,
                           default_shots=DEFAULT_SHOTS, source="offline lm-eval boolq (v2) on {file} (validation split)",
                           make_config=lm_eval_config)
