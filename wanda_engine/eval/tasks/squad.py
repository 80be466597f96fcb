"""SQuAD v2, offline: the prompt of lm-eval's `squadv2` task (version 3) over the official JSON
DIR/squad/dev-v2.0.json (any squad/*dev*.json), scored by exact match and F1 with the official answer
normalisation (wanda_engine.eval.squad_metric), in percent like the official script. lm-eval's own task
downloads its metric at run time; this one needs nothing from the network.

Prompt: "Title: …\\n\\nBackground: …\\n\\nQuestion: …\\n\\nAnswer:", greedy generation until a newline,
0-shot default (few-shot examples from squad/*train*.json). Questions are taken in file order; the
unanswerable ones are skipped unless --squad_unanswerable, where a generated "unanswerable" (the
word lm-eval's task uses as their target) counts as abstaining, i.e. as the empty answer.
"""

from __future__ import annotations

from functools import partial

from wanda_engine.eval.squad_metric import best_exact_match, best_f1, normalize_answer

from .base import TASKS, TaskRequest, TaskSpec, resolve_offline

EXTS = (".json", ".json.gz")
DEFAULT_SHOTS = 0
SCORED_SPLITS = ("dev",)  # file-name words of the scored file
ABSTAIN = "unanswerable"


def flatten(dataset, include_unanswerable: bool = False):
    """Official nested articles → one row per question, in file order, laid out like Hugging Face's
    squad_v2 rows (id, title, context, question, answers {text, answer_start})."""
    from datasets import Dataset

    rows = []
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = qa.get("answers") or []
                if not answers and not include_unanswerable:
                    continue
                rows.append({
                    "id": qa["id"], "title": article["title"], "context": paragraph["context"], "question": qa["question"],
                    "answers": {"text": [a["text"] for a in answers], "answer_start": [a["answer_start"] for a in answers]},
                })
    return Dataset.from_list(rows)


def prompt(doc: dict) -> str:
    return f"Title: {doc['title']}\n\nBackground: {doc['context']}\n\nQuestion: {doc['question']}\n\nAnswer:"


def target(doc: dict) -> str:
    answers = doc["answers"]["text"]
    return answers[0] if answers else ABSTAIN


def score(doc: dict, results: list[str]) -> dict[str, float]:
    prediction = results[0].strip()
    if normalize_answer(prediction) == ABSTAIN:
        prediction = ""
    answers = doc["answers"]["text"]
    return {"exact": 100.0 * best_exact_match(answers, prediction), "f1": 100.0 * best_f1(answers, prediction)}


def lm_eval_config(dev_file: str, train_file: str | None, num_fewshot: int, include_unanswerable: bool) -> dict:
    data_files = {"validation": dev_file, **({"train": train_file} if train_file else {})}
    return {
        "task": "squad",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": data_files, "field": "data"},
        "output_type": "generate_until",
        **({"training_split": "train", "fewshot_split": "train"} if train_file else {}),
        "validation_split": "validation",
        "process_docs": partial(flatten, include_unanswerable=include_unanswerable),
        "doc_to_text": prompt,
        "doc_to_target": target,
        "process_results": score,
        "metric_list": [
            {"metric": "exact", "aggregation": "mean", "higher_is_better": True},
            {"metric": "f1", "aggregation": "mean", "higher_is_better": True},
        ],
        "generation_kwargs": {"until": ["\n"], "do_sample": False},
        "num_fewshot": num_fewshot,
        "metadata": {"version": 3.0},
    }


@TASKS.register("squad", aliases=("squad_v2", "squadv2", "squad2"))
def resolve(request: TaskRequest, name: str) -> TaskSpec | None:
    questions = "all questions" if request.squad_unanswerable else "answerable questions only"
    return resolve_offline(
        "squad", request, split="validation", file_splits=SCORED_SPLITS, exts=EXTS, default_shots=DEFAULT_SHOTS,
        source=f"offline SQuAD v2 (lm-eval squadv2 prompt, official EM/F1) on {{file}} ({questions})",
        make_config=lambda scored, train, shots: lm_eval_config(scored, train, shots, request.squad_unanswerable),
    )
