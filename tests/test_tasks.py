"""Task evaluation (`cli.py eval`, `prune --tasks`): the offline SQuAD / GSM8K / BoolQ definitions, their
metrics on hand-checked cases (through lm-eval's own pipeline, with a scripted model), their prompts
against lm-eval's upstream tasks on the same records, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wanda_engine.errors import UserError
from wanda_engine.eval import squad_metric
from wanda_engine.eval.harness import run_lm_eval_task
from wanda_engine.eval.tasks import TaskRequest, resolve_tasks, task_names
from wanda_engine.eval.tasks import boolq as boolq_task
from wanda_engine.eval.tasks import gsm8k as gsm8k_task
from wanda_engine.eval.tasks import squad as squad_task
from wanda_engine.testing import write_task_files

lm_eval = pytest.importorskip("lm_eval")
from lm_eval.api.model import LM  # noqa: E402
from lm_eval.api.task import ConfigurableTask  # noqa: E402


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    return write_task_files(tmp_path_factory.mktemp("tasks"))


class ScriptedLM(LM):
    """An lm-eval model whose generations and choices are given by the test: `answers` maps a
    question (found in the last part of the prompt) to the generated text; loglikelihood prefers
    `choice` everywhere."""

    def __init__(self, answers: dict[str, str] | None = None, choice: str = " yes") -> None:
        super().__init__()
        self.answers, self.choice, self.prompts = answers or {}, choice, []

    def _answer(self, prompt: str) -> str:
        self.prompts.append(prompt)
        last = prompt.rsplit("Question:", 1)[-1]
        return next((text for question, text in self.answers.items() if question in last), "")

    def generate_until(self, requests):
        return [self._answer(request.args[0]) for request in requests]

    def loglikelihood(self, requests):
        return [(0.0 if request.args[1] == self.choice else -5.0, False) for request in requests]

    def loglikelihood_rolling(self, requests):
        return [0.0 for _ in requests]


def _task(name: str, task_dir: Path, **request):
    return resolve_tasks(name, TaskRequest(data_dir=str(task_dir), **request))[0]


# --- SQuAD metric ---------------------------------------------------------------------------------


def test_squad_normalisation_and_scores_on_hand_checked_cases():
    assert squad_metric.normalize_answer("  The Normans!  ") == "normans"
    assert squad_metric.normalize_answer("An apple, a pear; THE end.") == "apple pear end"
    assert squad_metric.normalize_answer("theory") == "theory"  # articles only as whole words
    assert squad_metric.exact_match("Normans", "the normans.") == 1.0
    assert squad_metric.exact_match("Normans", "Normandy") == 0.0
    # gold [in, 10th, century], prediction [10th, century]: precision 1, recall 2/3
    assert squad_metric.f1("in the 10th century", "10th century") == pytest.approx(0.8)
    assert squad_metric.f1("France", "Paris") == 0.0
    # repeated tokens count as often as they occur in both: gold [a1 a1 b] ~ pred [a1 b b]
    assert squad_metric.f1("x x y", "x y y") == pytest.approx(2 / 3)
    # the best over the gold answers; answers that normalise to nothing are dropped
    assert squad_metric.best_exact_match(["France", "the French Republic"], "french republic") == 1.0
    assert squad_metric.best_f1(["a region", "region in France"], "Normandy region") == pytest.approx(2 / 3)
    # unanswerable (no gold answer): only the empty prediction matches
    assert squad_metric.best_exact_match([], "") == 1.0 and squad_metric.best_f1([], "") == 1.0
    assert squad_metric.best_exact_match([], "France") == 0.0 and squad_metric.best_f1([], "France") == 0.0
    assert squad_metric.gold_answers(["", "  ", "the"]) == [""]


def test_squad_task_scores_through_lm_eval(task_dir):
    answers = {"In what country": "France\n", "Who gave their name": "the Normans.", "What kind of place": "Normandy region",
               "reach the moon": "unanswerable"}
    result, samples = run_lm_eval_task(ScriptedLM(answers), _task("squad", task_dir), max_gen_toks=8)
    assert result.examples == 3  # the unanswerable question is skipped by default
    assert result.metrics["exact"] == pytest.approx(100 * 2 / 3)
    assert result.metrics["f1"] == pytest.approx(100 * (1 + 1 + 2 / 3) / 3)
    assert [s["metrics"]["exact"] for s in samples] == [100.0, 100.0, 0.0]

    result, _ = run_lm_eval_task(ScriptedLM(answers), _task("squad", task_dir, squad_unanswerable=True), max_gen_toks=8)
    assert result.examples == 4  # "unanswerable" generated for the unanswerable question counts as abstaining
    assert result.metrics["exact"] == pytest.approx(100 * 3 / 4)


# --- GSM8K and BoolQ ------------------------------------------------------------------------------


def test_gsm8k_exact_match_under_both_filters(task_dir):
    answers = {  # the test records' gold answers are 12, 9 and 8
        "6 apples and buys 6": " He has 6 + 6 = 12 apples.\n#### 12",   # strict 1, flexible 1
        "8 apples and buys 1": " 8 + 1 = 9 apples in all",              # strict: no "#### " (0); flexible: 9 (1)
        "4 apples and buys 4": " #### 8 apples, or 16 halves",          # strict: 8 (1); flexible: last number 16 (0)
    }
    result, samples = run_lm_eval_task(ScriptedLM(answers), _task("gsm8k", task_dir), max_gen_toks=8)
    assert result.examples == 3 and result.num_fewshot == 5
    assert result.metrics["exact_match (strict-match)"] == pytest.approx(2 / 3)
    assert result.metrics["exact_match (flexible-extract)"] == pytest.approx(2 / 3)
    assert result.prompt.count("Question:") == 6  # five examples from the train file, then the question


def test_boolq_chooses_by_log_likelihood(task_dir):
    # the dev records' answers: True, False, True
    result, samples = run_lm_eval_task(ScriptedLM(choice=" yes"), _task("boolq", task_dir))
    assert result.examples == 3 and result.metrics["acc"] == pytest.approx(2 / 3)
    result, _ = run_lm_eval_task(ScriptedLM(choice=" no"), _task("boolq", task_dir))
    assert result.metrics["acc"] == pytest.approx(1 / 3)
    assert result.prompt == "Ice is water frozen into a solid state.\nQuestion: is ice frozen water?\nAnswer:"


def test_limit_takes_the_first_examples_in_file_order(task_dir):
    model = ScriptedLM()
    result, samples = run_lm_eval_task(model, _task("gsm8k", task_dir, num_fewshot=0), limit=2, max_gen_toks=8)
    records = [json.loads(line) for line in (task_dir / "gsm8k" / "test.jsonl").read_text().splitlines()]
    assert result.examples == 2
    strict = [s for s in samples if s["filter"] == "strict-match"]  # one record per example and filter
    assert [s["prompt"] for s in strict] == [f"Question: {r['question']}\nAnswer:" for r in records[:2]]


# --- the same prompts as lm-eval's own tasks ------------------------------------------------------


def _upstream_config(relative: str, data_files: dict, **changes) -> dict:
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(Path(lm_eval.__file__).parent / "tasks" / relative)
    config.pop("tag", None)
    config.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": data_files}, **changes)
    return config


def _requests(config: dict, limit: int | None = None) -> list:
    task = ConfigurableTask(config=config)
    task.set_fewshot_seed(1234)
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    return [(instance.doc_id, instance.args) for instance in task.instances]


SCORING_KEYS = ("output_type", "doc_to_text", "doc_to_target", "doc_to_choice", "generation_kwargs", "filter_list",
                "metric_list", "num_fewshot", "repeats", "training_split", "fewshot_split", "test_split", "metadata")


def test_gsm8k_definition_gives_lm_eval_prompts_and_scoring(task_dir):
    files = {"train": str(task_dir / "gsm8k" / "train.jsonl"), "test": str(task_dir / "gsm8k" / "test.jsonl")}
    upstream = _upstream_config("gsm8k/gsm8k.yaml", files)
    ours = gsm8k_task.lm_eval_config(files["test"], files["train"], gsm8k_task.DEFAULT_SHOTS)
    for key in SCORING_KEYS:
        assert ours.get(key) == upstream.get(key), key
    assert _requests(ours) == _requests(upstream)


def test_boolq_definition_gives_lm_eval_prompts(task_dir, tmp_path):
    # lm-eval's source (super_glue) says label 0/1 where the official files say answer false/true
    labelled = {}
    for split in ("train", "dev"):
        records = [json.loads(line) for line in (task_dir / "boolq" / f"{split}.jsonl").read_text().splitlines()]
        path = tmp_path / f"{split}.jsonl"
        path.write_text("".join(json.dumps({**r, "label": int(r["answer"])}) + "\n" for r in records))
        labelled[split] = str(path)
    upstream = _upstream_config("super_glue/boolq/default.yaml", {"train": labelled["train"], "validation": labelled["dev"]})
    ours = boolq_task.lm_eval_config(str(task_dir / "boolq" / "dev.jsonl"), str(task_dir / "boolq" / "train.jsonl"),
                                     boolq_task.DEFAULT_SHOTS)
    for key in ("output_type", "doc_to_text", "doc_to_target", "doc_to_choice", "metric_list", "validation_split"):
        assert ours.get(key) == upstream.get(key), key
    assert _requests(ours) == _requests(upstream)
    ours["num_fewshot"] = upstream["num_fewshot"] = 1  # few-shot contexts too
    assert _requests(ours) == _requests(upstream)


def test_squad_definition_gives_lm_eval_prompts(task_dir):
    from lm_eval.tasks.squadv2.task import SQuAD2

    upstream = SQuAD2.__new__(SQuAD2)  # its prompt needs no dataset (its constructor downloads one)
    dev_file = str(task_dir / "squad" / "dev-v2.0.json")
    task = ConfigurableTask(config=squad_task.lm_eval_config(dev_file, None, 0, include_unanswerable=True))
    task.build_all_requests(rank=0, world_size=1)
    docs = list(task.eval_docs)
    assert len(docs) == 4 and [d["question"] for d in docs][:2] == ["In what country is Normandy located?",
                                                                       "Who gave their name to Normandy?"]
    for instance, doc in zip(task.instances, docs):
        assert instance.args[0] == upstream.doc_to_text(doc)
        assert instance.args[1]["until"] == ["\n"]  # upstream generates until a newline too


# --- resolving --tasks ----------------------------------------------------------------------------


def test_task_names_expand_groups_and_drop_repeats():
    assert task_names("squad, boolq,squad") == ["squad", "boolq"]
    assert task_names("wanda_zero_shot")[:2] == ["boolq", "rte"] and len(task_names("wanda_zero_shot")) == 7


def test_resolved_tasks_name_their_files_and_splits(task_dir):
    squad, gsm8k, boolq, wikitext2 = resolve_tasks("squad,gsm8k,boolq,wikitext2", TaskRequest(data_dir=str(task_dir)))
    assert squad.files["validation"].endswith("dev-v2.0.json") and "answerable questions only" in squad.source
    assert gsm8k.files == {"test": str(task_dir / "gsm8k" / "test.jsonl"), "train": str(task_dir / "gsm8k" / "train.jsonl")}
    assert boolq.files["validation"].endswith("dev.jsonl") and boolq.num_fewshot == 0
    assert wikitext2.kind == "perplexity" and "wiki.test.raw" in wikitext2.source
    # the files scored (what fine-tuning must not use): not the few-shot file
    assert gsm8k.scored_files == [str(task_dir / "gsm8k" / "test.jsonl")]
    assert wikitext2.scored_files == [str(task_dir / "wikitext2" / "wiki.test.raw")]


@pytest.mark.parametrize("spec, request_options, message", [
    ("gsm8k", {"num_fewshot": -1}, "--num_fewshot -1"),
    ("", {}, "no task named"),
])
def test_bad_task_requests(task_dir, spec, request_options, message):
    with pytest.raises(UserError, match=message):
        resolve_tasks(spec, TaskRequest(data_dir=str(task_dir), **request_options))


def test_missing_files_and_unknown_tasks_offline(task_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=r"--tasks gsm8k: --data_dir .* has no gsm8k/test.jsonl .* not reachable"):
        resolve_tasks("gsm8k", TaskRequest(data_dir=str(empty)))
    with pytest.raises(UserError, match=r"--tasks arc_easy: not one of the offline tasks"):
        resolve_tasks("arc_easy", TaskRequest(data_dir=str(task_dir)))
    # few-shot examples never come from the scored file
    only_test = tmp_path / "only_test" / "gsm8k"
    only_test.mkdir(parents=True)
    (only_test / "test.jsonl").write_text((task_dir / "gsm8k" / "test.jsonl").read_text())
    with pytest.raises(UserError, match=r"5-shot needs few-shot examples from gsm8k/train.jsonl"):
        resolve_tasks("gsm8k", TaskRequest(data_dir=str(only_test.parent)))
    assert resolve_tasks("gsm8k", TaskRequest(data_dir=str(only_test.parent), num_fewshot=0))[0].files.keys() == {"test"}
    # evaluation never falls back to another split
    (only_test / "test.jsonl").rename(only_test / "train.jsonl")
    with pytest.raises(UserError, match="has no gsm8k/test.jsonl"):
        resolve_tasks("gsm8k", TaskRequest(data_dir=str(only_test.parent)))

