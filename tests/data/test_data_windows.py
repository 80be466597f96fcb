"""wikitext2, plain text files and builtin: the reference WikiText-2 window procedure."""

from __future__ import annotations

import random
import shutil

import pytest
import torch

from wanda_engine.data import calibration_names, load_calibration, load_eval_text
from wanda_engine.data.builtin import split_keys
from wanda_engine.errors import UserError

from datatest_helpers import wiki_lines, words


def reference_windows(tok, text: str, nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """The reference get_wikitext2 loop, re-stated."""
    enc = tok(text, return_tensors="pt")
    random.seed(seed)
    rows = []
    for _ in range(nsamples):
        i = random.randint(0, enc.input_ids.shape[1] - seqlen - 1)
        rows.append(enc.input_ids[:, i : i + seqlen])
    return torch.cat(rows)


def hf_rows(path) -> list[str]:
    with open(path, encoding="utf-8") as f:  # how the Hugging Face wikitext builder makes rows
        return [row if row.strip() else "" for row in f]


def test_names_registered():
    assert {"wikitext2", "c4", "squad", "gsm8k", "boolq", "builtin"} <= set(calibration_names())


def test_wikitext2_local_equals_reference(tok, data_dir):
    path = f"{data_dir}/wikitext2/wiki.train.raw"
    expected = reference_windows(tok, " ".join(hf_rows(path)), 8, 32, 3)
    cs = load_calibration("wikitext2", tok, nsamples=8, seqlen=32, seed=3, data_dir=data_dir)
    assert cs.input_ids.dtype == torch.int64 and cs.attention_mask.dtype == torch.int64
    assert torch.equal(cs.input_ids, expected)
    assert torch.equal(cs.attention_mask, torch.ones(8, 32, dtype=torch.int64))
    assert "wiki.train.raw" in cs.description and "no padding" in cs.description


def test_wikitext2_rows_keep_newlines_and_blank_whitespace_lines(tmp_path, tok):
    (tmp_path / "wikitext2").mkdir()
    (tmp_path / "wikitext2" / "wiki.train.raw").write_text(" = A = \n \n" + words(80, 1) + " \n\t\n", encoding="utf-8")
    from wanda_engine.data.wikitext2 import train_text

    text, _ = train_text(str(tmp_path))
    assert text == " = A = \n" + " " + "" + " " + words(80, 1) + " \n" + " " + ""


def test_wikitext2_accepts_tokens_file(tmp_path, tok):
    (tmp_path / "wikitext2").mkdir()
    (tmp_path / "wikitext2" / "wiki.train.tokens").write_text(wiki_lines(5, 9), encoding="utf-8")
    cs = load_calibration("wikitext2", tok, nsamples=3, seqlen=16, data_dir=str(tmp_path))
    assert "wiki.train.tokens" in cs.description and cs.input_ids.shape == (3, 16)


def test_wikitext2_determinism(tok, data_dir):
    a = load_calibration("wikitext2", tok, nsamples=6, seqlen=24, seed=0, data_dir=data_dir)
    b = load_calibration("wikitext2", tok, nsamples=6, seqlen=24, seed=0, data_dir=data_dir)
    c = load_calibration("wikitext2", tok, nsamples=6, seqlen=24, seed=1, data_dir=data_dir)
    assert torch.equal(a.input_ids, b.input_ids) and a.description == b.description
    assert not torch.equal(a.input_ids, c.input_ids)


def test_global_random_state_restored(tok, data_dir):
    random.seed(123)
    expected = random.random()
    random.seed(123)
    load_calibration("wikitext2", tok, nsamples=2, seqlen=8, data_dir=data_dir)
    assert random.random() == expected


def test_wikitext2_missing_train_fails_fast_with_hint(tmp_path, tok, data_dir):
    shutil.copytree(f"{data_dir}/wikitext2", tmp_path / "wikitext2")
    (tmp_path / "wikitext2" / "wiki.train.raw").unlink()
    with pytest.raises(UserError) as e:
        load_calibration("wikitext2", tok, nsamples=2, seqlen=8, data_dir=str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and "--data_dir" in msg and "wiki.train.raw" in msg
    assert str(tmp_path / "wikitext2" / "wiki.valid.tokens") in msg
    with pytest.raises(UserError, match="wiki.valid.tokens"):
        load_calibration("wikitext2", tok, nsamples=2, seqlen=8)  # no data_dir, hub offline


@pytest.mark.parametrize("name", ["calib.txt", "wiki.valid.raw", "wiki.valid.tokens", "notes.md"])
def test_text_file_equals_reference(tmp_path, tok, name):
    path = tmp_path / name
    text = wiki_lines(4, 5)
    path.write_text(text, encoding="utf-8")
    cs = load_calibration(str(path), tok, nsamples=5, seqlen=20, seed=7)
    assert torch.equal(cs.input_ids, reference_windows(tok, text, 5, 20, 7))
    assert str(path) in cs.description


def test_text_file_too_short(tmp_path, tok):
    path = tmp_path / "short.txt"
    path.write_text("w1 w2 w3", encoding="utf-8")  # 4 tokens with <s>
    with pytest.raises(UserError, match=r"only 4 tokens.*--seqlen 3 or less") as e:
        load_calibration(str(path), tok, nsamples=1, seqlen=4)
    assert "\n" not in str(e.value)
    assert load_calibration(str(path), tok, nsamples=1, seqlen=3).input_ids.shape == (1, 3)


def test_text_file_empty_and_not_utf8(tmp_path, tok):
    (tmp_path / "empty.txt").write_text(" \n\n", encoding="utf-8")
    with pytest.raises(UserError, match="empty"):
        load_calibration(str(tmp_path / "empty.txt"), tok, nsamples=1, seqlen=4)
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(UserError, match="not UTF-8"):
        load_calibration(str(tmp_path / "bin.txt"), tok, nsamples=1, seqlen=4)


def test_builtin_calibration_and_eval_never_overlap(tok):
    from pydoc_data.topics import topics

    cal, ev = split_keys()
    assert cal and ev and not set(cal) & set(ev) and sorted(cal + ev) == sorted(topics)
    eval_text, description = load_eval_text("builtin")
    assert "held-out" in description
    cal_text = "\n\n".join(topics[k] for k in cal)
    assert eval_text == "\n\n".join(topics[k] for k in ev)
    for k in ev:
        assert topics[k] not in cal_text
    for k in cal:
        assert topics[k] not in eval_text
    assert 0.1 < len(eval_text) / (len(eval_text) + len(cal_text)) < 0.4


def test_builtin_calibration_windows(tok):
    from pydoc_data.topics import topics

    cal, _ = split_keys()
    cs = load_calibration("builtin", tok, nsamples=4, seqlen=64, seed=2)
    expected = reference_windows(tok, "\n\n".join(topics[k] for k in cal), 4, 64, 2)
    assert torch.equal(cs.input_ids, expected) and "pydoc_data.topics" in cs.description
