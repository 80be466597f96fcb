"""`cli.py experiment`: a pruned model shared by the rows that need it, every finished cell kept, and an
interrupted matrix resumed without redoing finished cells; results.json / .md / .png written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import wanda_engine.finetune as finetune_module
from wanda_engine.config import ExperimentConfig
from wanda_engine.errors import UserError
from wanda_engine.experiment import run_experiment
from wanda_engine.testing import SAMPLE_TEXT, write_task_files

pytest.importorskip("lm_eval")
pytest.importorskip("peft")


@pytest.fixture()
def setup(tmp_path, tiny_model_dir):
    data = write_task_files(tmp_path / "data")
    calibration = tmp_path / "calibration.txt"
    calibration.write_text(SAMPLE_TEXT * 20)
    tuning = tmp_path / "tuning.jsonl"
    tuning.write_text("".join(json.dumps({"context": f"Box {i} has {i} balls.", "question": f"Balls in box {i}?",
                                          "answer": str(i)}) + "\n" for i in range(10)))
    config = tmp_path / "matrix.toml"
    config.write_text(f"""
sparsity_ratio = 0.5
tasks = "boolq,wikitext2"
[prune]
nsamples = 4
seqlen = 32
batch_size = 2
[finetune]
max_steps = 2
seqlen = 32
batch_size = 2
eval_examples = 1
[eval]
task_limit = 2
seqlen = 32
[[rows]]
name = "a"
prune = "{calibration}"
finetune = "{tuning}"
[[rows]]
name = "b"
prune = "{calibration}"
finetune = "{calibration}"
""")
    return ExperimentConfig(output=str(tmp_path / "matrix"), model=tiny_model_dir, config=str(config), data_dir=str(data),
                            progress=False)


def test_rows_share_their_pruned_model_and_an_interrupted_matrix_resumes(setup, monkeypatch):
    real = finetune_module.run_finetune
    calls = []

    def interrupted_on_second(config, log=print):
        calls.append(config.dataset)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(config, log)

    monkeypatch.setattr(finetune_module, "run_finetune", interrupted_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(setup, log=lambda _: None)
    monkeypatch.setattr(finetune_module, "run_finetune", real)
    results = run_experiment(setup, log=lambda _: None)
    labels = [row["label"] for row in results["rows"]]
    assert labels[0] == "dense" and labels[-2:] == ["experiment a", "experiment b"] and len(labels) == 4  # one pruned baseline
    kinds = lambda names: sorted(name.split("-")[0] for name in names)  # noqa: E731
    # before the interruption: dense eval, the one pruning, its eval, row a's fine-tune and eval
    assert kinds(results["cells_reused"]) == ["eval", "eval", "eval", "finetune", "prune"]
    assert kinds(results["cells_made"]) == ["eval", "finetune"]
    root = Path(setup.output)
    assert {"results.json", "results.md", "results.png"} <= {p.name for p in root.iterdir()}
    md = (root / "results.md").read_text()
    assert "| experiment a |" in md and "boolq acc" in md and "wikitext2 perplexity" in md
    again = run_experiment(setup, log=lambda _: None)
    assert again["cells_made"] == [] and len(again["cells_reused"]) == 7


def test_matrix_config_errors(setup, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[prune]\nnsampels = 3\n")
    with pytest.raises(UserError, match="unknown key 'nsampels'"):
        run_experiment(ExperimentConfig(output=str(tmp_path / "m"), config=str(bad)), log=lambda _: None)
    for text, needle in (('[finetune]\nmax_steps = "50"\n', "[finetune] max_steps = '50': expected int"),
                         ("prune = 3\n", "prune must be a table"),
                         ("[finetune]\nkeep_adapter = true\n", "unknown key 'keep_adapter'"),
                         (f'[finetune]\nlr = 0\n[[rows]]\nprune = "builtin"\nfinetune = "{tmp_path / "calibration.txt"}"\n',
                          "--lr 0: must be a positive number")):
        bad.write_text(text)
        with pytest.raises(UserError, match=re.escape(needle)):
            run_experiment(ExperimentConfig(output=str(tmp_path / "m"), config=str(bad), data_dir=setup.data_dir),
                           log=lambda _: None)
    scored = tmp_path / "scored.toml"
    scored.write_text(f'[[rows]]\nprune = "wikitext2"\nfinetune = "{setup.data_dir}/gsm8k/test.jsonl"\n')
    with pytest.raises(UserError, match="is the file the evaluation scores"):
        run_experiment(ExperimentConfig(output=str(tmp_path / "m"), config=str(scored), data_dir=setup.data_dir),
                       log=lambda _: None)
    assert not (tmp_path / "m").exists()
