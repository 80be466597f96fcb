"""`cli.py eval` and `cli.py prune --tasks` end to end on a tiny model with tiny task files: what is
written, what is printed, that scoring does not change the pruning, and bad input."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from model_helpers import text_perplexity
from wanda_engine.data import load_eval_text
from test_cli import base_args, run_cli
from wanda_engine.report import EvalReport, Report
from wanda_engine.testing import write_task_files

pytest.importorskip("lm_eval")

TASKS = "wikitext2,squad,gsm8k,boolq"


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    return write_task_files(tmp_path_factory.mktemp("task_files"))


def eval_args(model_dir: str, task_dir, *extra: str) -> list[str]:
    return ["eval", "--model", model_dir, "--tasks", TASKS, "--data_dir", str(task_dir), "--seqlen", "32",
            "--limit", "2", "--max_gen_toks", "4", "--batch_size", "2", "--no_progress", *extra]


def test_eval_writes_results_and_one_line_per_task(tiny_model_dir, task_dir, tmp_path, capsys):
    out = tmp_path / "scores"
    code, stdout, stderr = run_cli(eval_args(tiny_model_dir, task_dir, "--save", str(out)), capsys)
    assert code == 0, stderr
    lines = [line for line in stdout.splitlines() if line.split(":")[0] in TASKS.split(",")]
    assert [line.split(":")[0] for line in lines] == TASKS.split(",")
    assert "gsm8k: exact_match (strict-match)" in stdout and "(2 examples, 5-shot," in stdout
    report = EvalReport.from_json(json.loads((out / "results.json").read_text()))
    by_task = {r.task: r for r in report.tasks}
    assert set(by_task) == set(TASKS.split(","))
    assert set(by_task["squad"].metrics) == {"exact", "f1"} and by_task["boolq"].examples == 2
    assert "dev-v2.0.json" in by_task["squad"].source and by_task["squad"].prompt.startswith("Title: Normans")
    # the perplexity task is the engine's protocol, on the first --limit windows
    joined = tmp_path / "joined.txt"
    joined.write_text(load_eval_text("wikitext2", data_dir=str(task_dir))[0])
    assert by_task["wikitext2"].examples == 2
    assert by_task["wikitext2"].metrics["perplexity"] == pytest.approx(text_perplexity(tiny_model_dir, str(joined), 32, 2), rel=1e-5)
    md = (out / "results.md").read_text()
    assert "| squad | f1 |" in md and "Question: Tom has 6 apples" in md
    samples = [json.loads(line) for line in (out / "samples" / "gsm8k.jsonl").read_text().splitlines()]
    assert {s["doc_id"] for s in samples} == {0, 1}


@pytest.mark.parametrize("extra, needle", [
    (["--tasks", "nosuchtask"], "--tasks nosuchtask: not one of the offline tasks"),
    (["--limit", "0"], "--limit 0: must be at least 1"),
    (["--num_fewshot", "-2"], "--num_fewshot -2"),
    (["--max_gen_toks", "1000"], "--max_gen_toks 1000: leaves no room"),
    (["--data_dir", "/nonexistent/place"], "--data_dir '/nonexistent/place' is not a directory"),
])
def test_eval_bad_input_is_one_line_exit_2_nothing_written(extra, needle, tiny_model_dir, task_dir, tmp_path, capsys,
                                                           monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "scores"
    code, _, stderr = run_cli(eval_args(tiny_model_dir, task_dir, "--save", str(out)) + extra, capsys)
    assert code == 2 and needle in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_eval_refuses_a_model_without_its_files(task_dir, tmp_path, capsys):
    (tmp_path / "not_a_model").mkdir()
    code, _, stderr = run_cli(eval_args(str(tmp_path / "not_a_model"), task_dir), capsys)
    assert code == 2 and "has no config.json" in stderr and len(stderr.strip().splitlines()) == 1


def test_prune_with_tasks_scores_dense_and_pruned_and_prunes_as_without(tiny_model_dir, calibration_text_file, task_dir,
                                                                        tmp_path, capsys):
    plain = base_args(tiny_model_dir, calibration_text_file, tmp_path) + ["--no_stream", "--calibration_dataset", "squad",
                                                                          "--data_dir", str(task_dir)]
    code, _, stderr = run_cli(plain + ["--save_model", str(tmp_path / "plain")], capsys)
    assert code == 0, stderr
    with_tasks = plain + ["--tasks", "squad,boolq,wikitext2", "--task_limit", "2", "--max_gen_toks", "4",
                          "--save", str(tmp_path / "report"), "--save_model", str(tmp_path / "scored")]
    code, stdout, stderr = run_cli(with_tasks, capsys)
    assert code == 0, stderr
    assert "dense squad: exact" in stdout and "pruned boolq: acc" in stdout
    report = Report.load(tmp_path / "report")
    assert [r.task for r in report.tasks_dense] == [r.task for r in report.tasks_pruned] == ["squad", "boolq", "wikitext2"]
    dense_ppl, pruned_ppl = (r.metrics["perplexity"] for r in (report.tasks_dense[2], report.tasks_pruned[2]))
    assert pruned_ppl != dense_ppl
    assert "## Task scores" in (tmp_path / "report" / "report.md").read_text()
    # scoring the dense model first (lm-eval reseeds the generators, sets a pad token) changes no mask
    a = load_file(tmp_path / "plain" / "model.safetensors")
    b = load_file(tmp_path / "scored" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)

    code, stdout, stderr = run_cli(plain + ["--tasks", "boolq", "--task_limit", "1", "--no_dense_eval"], capsys)
    assert code == 0, stderr
    assert "dense boolq" not in stdout and "pruned boolq" in stdout


def test_prune_tasks_bad_input(tiny_model_dir, calibration_text_file, task_dir, tmp_path, capsys):
    args = base_args(tiny_model_dir, calibration_text_file, tmp_path) + ["--save", str(tmp_path / "report")]
    for extra, needle in ((["--tasks", "boolq", "--data_dir", str(task_dir), "--task_limit", "0"], "--task_limit 0"),
                          (["--no_dense_eval"], "--no_dense_eval skips"),
                          (["--tasks", "boolq", "--data_dir", str(task_dir), "--resume", "--save_model", str(tmp_path / "m")],
                           "--tasks needs the whole model")):
        code, _, stderr = run_cli(args + extra, capsys)
        assert code == 2 and needle in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["eval", "finetune", "experiment"])
def test_help_of_the_new_commands_states_each_default_once(command):
    import cli

    text = cli.build_parser()._subparsers._group_actions[0].choices[command].format_help()
    flat = " ".join(text.split())
    assert "(default: None)" not in flat and "(default: False)" not in flat
    assert flat.count("(default:") == flat.count("(default: ") and "default: default" not in flat


def test_finetune_and_experiment_commands_end_to_end_and_bad_input(tiny_model_dir, tmp_path, capsys):
    tuning = tmp_path / "qa.jsonl"
    tuning.write_text("".join(json.dumps({"question": f"Q{i}?", "answer": f"A{i}"}) + "\n" for i in range(8)))
    out = tmp_path / "tuned"
    code, stdout, stderr = run_cli(["finetune", "--model", tiny_model_dir, "--dataset", str(tuning), "--output", str(out),
                                    "--max_steps", "2", "--batch_size", "2", "--seqlen", "32", "--no_progress"], capsys)
    assert code == 0, stderr
    assert "fine-tuned for 2 steps" in stdout and (out / "finetune.json").is_file() and (out / "config.json").is_file()
    for argv, needle in ((["finetune", "--model", tiny_model_dir, "--dataset", str(tuning), "--output", str(tmp_path / "x"),
                           "--max_steps", "0"], "--max_steps 0"),
                         (["finetune", "--model", tiny_model_dir, "--dataset", str(tuning), "--output", str(out)],
                          "directory exists and is not empty"),
                         (["experiment", "--output", str(tmp_path / "m"), "--config", str(tmp_path / "missing.toml")],
                          "cannot read it")):
        code, _, stderr = run_cli(argv, capsys)
        assert code == 2 and needle in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "m").exists()
