"""GSM8K, offline: lm-eval's `gsm8k` task (version 3) over DIR/gsm8k/test.jsonl, few-shot examples from
DIR/gsm8k/train.jsonl. Same prompt ("Question: …\\nAnswer:"), 5-shot default, greedy generation until
"Question:", and exact match under both of its filters: `strict-match` (the number after "#### ") and
`flexible-extract` (the last number in the generation)."""

from __future__ import annotations

from .base import TASKS, TaskRequest, TaskSpec, resolve_offline

EXTS = (".jsonl", ".jsonl.gz")
DEFAULT_SHOTS = 5
SCORED_SPLITS = ("test",)  # file-name words of the scored file


def lm_eval_config(test_file: str, train_file: str | None, num_fewshot: int) -> dict:
    data_files = {"test": test_file, **({"train": train_file} if train_file else {})}
    return {
        "task": "gsm8k",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": data_files},
        "output_type": "generate_until",
        **({"training_split": "train", "fewshot_split": "train"} if train_file else {}),
        "test_split": "test",
        "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_target": "{{answer}}",
        "metric_list": [{
            "metric": "exact_match", "aggregation": "mean", "higher_is_better": True, "ignore_case": True,
            "ignore_punctuation": False, "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"],
        }],
        "generation_kwargs": {"until": ["Question:", "</s>", "<|im_end|>"], "do_sample": False, "temperature": 0.0},
        "repeats": 1,
        "num_fewshot": num_fewshot,
        "filter_list": [
            {"name": "strict-match",
             "filter": [{"function": "regex", "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"}, {"function": "take_first"}]},
            {"name": "flexible-extract",
             "filter": [{"function": "regex", "group_select": -1, "regex_pattern": "(-?[$0-9.,]{2,})|(-?[0-9]+)"},
                        {"function": "take_first"}]},
        ],
        "metadata": {"version": 3.0},
    }


@TASKS.register("gsm8k")
def resolve(request: TaskRequest, name: str) -> TaskSpec | None:
    return resolve_offline("gsm8k", request, split="test", file_splits=SCORED_SPLITS, exts=EXTS, default_shots=DEFAULT_SHOTS,
                           source="offline lm-eval gsm8k (v3) on {file} (test split)", make_config=lm_eval_config)
