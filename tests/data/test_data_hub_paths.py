"""The hub code paths, with datasets.load_dataset replaced by a fake (no network): exact ids and splits."""

from __future__ import annotations

import random

import pytest
import torch

from datatest_helpers import c4_docs, words
from wanda_engine.data import load_calibration, load_eval_text


@pytest.fixture()
def fake_hub(monkeypatch):
    import datasets

    calls = []
    tables = {
        ("wikitext", "wikitext-2-raw-v1", "train"): {"text": ["", " = A = \n", words(200, 1) + " \n", ""]},
        ("wikitext", "wikitext-2-raw-v1", "test"): {"text": ["", " = B = \n", words(50, 2) + " \n"]},
        ("squad_v2", None, "train"): {"context": [words(20, i) for i in range(6)],
                                      "question": [words(4, 10 + i) for i in range(6)],
                                      "answers": [{"text": ["x"], "answer_start": [0]}] * 6},
        ("gsm8k", "main", "train"): {"question": [words(9, i) for i in range(5)], "answer": ["ANSWERWORD"] * 5},
        ("google/boolq", None, "train"): {"question": [words(5, i) for i in range(5)],
                                          "passage": [words(15, 20 + i) for i in range(5)], "answer": [True] * 5},
        ("allenai/c4", None, "train"): {"text": c4_docs(30, 4)},
        ("allenai/c4", None, "validation"): {"text": c4_docs(1200, 5)},
    }

    def fake_load_dataset(path, name=None, split=None, data_files=None, **kwargs):
        calls.append((path, name, split, data_files))
        return datasets.Dataset.from_dict(tables[(path, name, split)])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    return calls, tables


def test_hub_wikitext2(tok, fake_hub):
    calls, tables = fake_hub
    cs = load_calibration("wikitext2", tok, nsamples=3, seqlen=16, seed=2)
    assert calls == [("wikitext", "wikitext-2-raw-v1", "train", None)]
    enc = tok(" ".join(tables[("wikitext", "wikitext-2-raw-v1", "train")]["text"]), return_tensors="pt").input_ids
    random.seed(2)
    starts = [random.randint(0, enc.shape[1] - 16 - 1) for _ in range(3)]
    assert torch.equal(cs.input_ids, torch.stack([enc[0, i : i + 16] for i in starts]))
    text, description = load_eval_text("wikitext2")
    assert text == "\n\n".join(tables[("wikitext", "wikitext-2-raw-v1", "test")]["text"]) and "Hugging Face" in description


def test_hub_tasks(tok, fake_hub):
    calls, _ = fake_hub
    for spec in ("squad", "gsm8k", "boolq"):
        cs = load_calibration(spec, tok, nsamples=3, seqlen=24)
        assert cs.input_ids.shape == (3, 24) and "Hugging Face" in cs.description
    assert [c[:3] for c in calls] == [("squad_v2", None, "train"), ("gsm8k", "main", "train"), ("google/boolq", None, "train")]


def test_hub_c4(tok, fake_hub):
    calls, tables = fake_hub
    cs = load_calibration("c4", tok, nsamples=2, seqlen=32)
    assert calls[0] == ("allenai/c4", None, "train", {"train": "en/c4-train.00000-of-01024.json.gz"})
    assert cs.input_ids.shape == (2, 32)
    text, _ = load_eval_text("c4")
    assert calls[1] == ("allenai/c4", None, "validation", {"validation": "en/c4-validation.00000-of-00008.json.gz"})
    assert text == " ".join(tables[("allenai/c4", None, "validation")]["text"][:1100])
