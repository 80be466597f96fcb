"""c4 (reference document loop) and mix:..."""

from __future__ import annotations

import json
import random

import pytest
import torch

from wanda_engine.data import load_calibration
from wanda_engine.data.mix import split_counts
from wanda_engine.errors import UserError

from datatest_helpers import c4_docs, write_jsonl


def reference_c4(tok, docs, nsamples, seqlen, seed):
    random.seed(seed)
    rows = []
    for _ in range(nsamples):
        while True:
            i = random.randint(0, len(docs) - 1)
            enc = tok(docs[i], return_tensors="pt")
            if enc.input_ids.shape[1] > seqlen:
                break
        i = random.randint(0, enc.input_ids.shape[1] - seqlen - 1)
        rows.append(enc.input_ids[:, i : i + seqlen])
    return torch.cat(rows)


def test_c4_equals_reference_and_prefers_train(tok, data_dir):
    docs = [json.loads(l)["text"] for l in open(f"{data_dir}/c4/c4-train.00000-of-01024.json")]
    cs = load_calibration("c4", tok, nsamples=10, seqlen=64, seed=5, data_dir=data_dir)
    assert torch.equal(cs.input_ids, reference_c4(tok, docs, 10, 64, 5))
    assert cs.attention_mask.eq(1).all() and "c4-train" in cs.description and "validation" not in cs.description


def test_c4_determinism(tok, data_dir):
    a = load_calibration("c4", tok, nsamples=5, seqlen=32, seed=0, data_dir=data_dir)
    b = load_calibration("c4", tok, nsamples=5, seqlen=32, seed=0, data_dir=data_dir)
    c = load_calibration("c4", tok, nsamples=5, seqlen=32, seed=1, data_dir=data_dir)
    assert torch.equal(a.input_ids, b.input_ids) and not torch.equal(a.input_ids, c.input_ids)


def test_c4_without_train_file_uses_present_files(tmp_path, tok):
    write_jsonl(tmp_path / "c4" / "c4-validation-sample.json.gz", [{"text": t} for t in c4_docs(10, 3)], gz=True)
    cs = load_calibration("c4", tok, nsamples=2, seqlen=16, data_dir=str(tmp_path))
    assert "c4-validation-sample.json.gz" in cs.description and "same documents" in cs.description


def test_c4_no_long_enough_document_is_an_error_not_a_hang(tmp_path, tok):
    write_jsonl(tmp_path / "c4" / "c4-train.json", [{"text": "w1 w2 w3"}, {"text": "w4"}, {"text": ""}])
    with pytest.raises(UserError, match=r"none of the 3 documents.*longest has 4.*--seqlen 3 or less") as e:
        load_calibration("c4", tok, nsamples=1, seqlen=4, data_dir=str(tmp_path))
    assert "\n" not in str(e.value)
    assert load_calibration("c4", tok, nsamples=2, seqlen=3, data_dir=str(tmp_path)).input_ids.shape == (2, 3)


def test_c4_file_without_text_field(tmp_path, tok):
    write_jsonl(tmp_path / "c4" / "c4-train.json", [{"content": "w1"}])
    with pytest.raises(UserError, match="no 'text' field"):
        load_calibration("c4", tok, nsamples=1, seqlen=4, data_dir=str(tmp_path))


# ------------------------------------------------------------------ mix
@pytest.mark.parametrize(
    "weights,total,expected",
    [([1, 1], 5, [3, 2]), ([0.5, 0.3, 0.2], 16, [8, 5, 3]), ([1, 1, 1], 4, [2, 1, 1]), ([0.9, 0.1], 1, [1, 0]),
     ([2, 1], 128, [85, 43])],
)
def test_split_counts(weights, total, expected):
    assert split_counts(weights, total) == expected and sum(expected) == total


def test_mix_counts_by_weight(tok, data_dir):
    cs = load_calibration("mix:wikitext2=0.75,squad=0.25", tok, nsamples=16, seqlen=40, seed=0, data_dir=data_dir)
    assert cs.input_ids.shape == (16, 40)
    padded = (cs.attention_mask == 0).any(1)  # squad samples here are shorter than 40 tokens... mostly
    windows = load_calibration("wikitext2", tok, nsamples=12, seqlen=40, seed=0, data_dir=data_dir).input_ids
    squad = load_calibration("squad", tok, nsamples=4, seqlen=40, seed=1, data_dir=data_dir)
    rows = {tuple(r.tolist()) for r in cs.input_ids}
    assert {tuple(r.tolist()) for r in windows} | {tuple(r.tolist()) for r in squad.input_ids} == rows
    assert int(padded.sum()) == int((squad.attention_mask == 0).any(1).sum())
    assert "12 samples" in cs.description and "4 samples" in cs.description


def test_mix_is_shuffled_concatenation(tok, data_dir):
    cs = load_calibration("mix:c4=1,gsm8k=1", tok, nsamples=6, seqlen=20, seed=3, data_dir=data_dir)
    a = load_calibration("c4", tok, nsamples=3, seqlen=20, seed=3, data_dir=data_dir)
    b = load_calibration("gsm8k", tok, nsamples=3, seqlen=20, seed=4, data_dir=data_dir)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(cs.input_ids, torch.cat([a.input_ids, b.input_ids])[perm])
    assert torch.equal(cs.attention_mask, torch.cat([a.attention_mask, b.attention_mask])[perm])
    again = load_calibration("mix:c4=1,gsm8k=1", tok, nsamples=6, seqlen=20, seed=3, data_dir=data_dir)
    other = load_calibration("mix:c4=1,gsm8k=1", tok, nsamples=6, seqlen=20, seed=4, data_dir=data_dir)
    assert torch.equal(cs.input_ids, again.input_ids) and not torch.equal(cs.input_ids, other.input_ids)


def test_mix_zero_count_source_not_loaded(tok, data_dir):
    cs = load_calibration("mix:wikitext2=0.9,hf:not/loaded=0.1", tok, nsamples=1, seqlen=8, data_dir=data_dir)
    assert cs.input_ids.shape == (1, 8) and "0 samples, not loaded" in cs.description


@pytest.mark.parametrize(
    "spec,pattern",
    [
        ("mix:", "not <source>=<weight>"),
        ("mix:wikitext2", "not <source>=<weight>"),
        ("mix:wikitext2=0.5,", "not <source>=<weight>"),
        ("mix:=1", "not <source>=<weight>"),
        ("mix:wikitext2=abc", "'abc' of 'wikitext2' is not a number"),
        ("mix:wikitext2=0,squad=1", "must be a positive number"),
        ("mix:wikitext2=-1,squad=1", "must be a positive number"),
        ("mix:wikitext2=nan,squad=1", "must be a positive number"),
        ("mix:wikitext2=inf,squad=1", "must be a positive number"),
        ("mix:mix:wikitext2=1=1", "nested mix"),
        ("mix:squad=1,squad=2", "appears twice"),
        ("mix:wikitext2=1,nosuch=1", "unknown calibration source 'nosuch'"),
    ],
)
def test_mix_errors(tok, data_dir, spec, pattern):
    with pytest.raises(UserError, match=pattern) as e:
        load_calibration(spec, tok, nsamples=4, seqlen=8, data_dir=data_dir)
    assert "\n" not in str(e.value)
