"""load_eval_text, resolve_eval, and the general error paths of load_calibration."""

from __future__ import annotations

import gzip
import json
import time
import types

import pytest

import wanda_engine.data as D
from wanda_engine.data import load_calibration, load_eval_text, resolve_eval, resolve_eval_with_reason
from wanda_engine.data.base import pad_token_id
from wanda_engine.errors import UserError

from datatest_helpers import write_jsonl


# ------------------------------------------------------------------ eval text
def test_eval_wikitext2_local_raw(data_dir):
    path = f"{data_dir}/wikitext2/wiki.test.raw"
    with open(path, encoding="utf-8") as f:
        rows = [row if row.strip() else "" for row in f]
    text, description = load_eval_text("wikitext2", data_dir=data_dir)
    assert text == "\n\n".join(rows) and "wiki.test.raw" in description


def test_eval_wikitext2_joined_file(tmp_path, data_dir):
    (tmp_path / "wikitext2").mkdir()
    (tmp_path / "wikitext2" / "wiki.test.joined.txt").write_text("a\n\n b \n", encoding="utf-8")
    text, description = load_eval_text("wikitext2", data_dir=str(tmp_path))
    assert text == "a\n\n b \n" and "joined" in description


def test_eval_wikitext2_offline_error(tmp_path):
    start = time.time()
    with pytest.raises(UserError, match=r"wikitext2 test split.*--data_dir DIR containing wikitext2/wiki.test.raw") as e:
        load_eval_text("wikitext2", data_dir=str(tmp_path))
    assert "\n" not in str(e.value) and time.time() - start < 10


def test_eval_c4_validation_docs_joined(tmp_path, data_dir):
    with gzip.open(f"{data_dir}/c4/c4-validation.00000-of-00008.json.gz", "rt") as f:
        docs = [json.loads(l)["text"] for l in f]
    text, description = load_eval_text("c4", data_dir=data_dir)
    assert text == " ".join(docs) and "c4-validation" in description and "c4-train" not in description
    write_jsonl(tmp_path / "c4" / "c4-validation.json", [{"text": f"d{i}"} for i in range(1105)])
    text, _ = load_eval_text("c4", data_dir=str(tmp_path))
    assert text == " ".join(f"d{i}" for i in range(1100))  # the reference's first 1100 documents


def test_eval_file_and_errors(tmp_path):
    (tmp_path / "e.txt").write_text("some text\n", encoding="utf-8")
    assert load_eval_text(str(tmp_path / "e.txt"))[0] == "some text\n"
    (tmp_path / "blank.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(UserError, match="empty"):
        load_eval_text(str(tmp_path / "blank.txt"))
    with pytest.raises(UserError, match=r"unknown evaluation text 'squad'.*builtin, c4, wikitext2"):
        load_eval_text("squad")
    with pytest.raises(UserError, match="not a directory"):
        load_eval_text("builtin", data_dir=str(tmp_path / "nope"))


# ------------------------------------------------------------------ resolve_eval
def test_resolve_eval_auto(tmp_path, data_dir, monkeypatch):
    assert resolve_eval("none", "wikitext2", data_dir) is None
    assert resolve_eval("auto", "wikitext2", None) == "wikitext2"
    assert resolve_eval("auto", "builtin", data_dir) == "builtin"
    assert resolve_eval("auto", "squad", data_dir) == "wikitext2"  # DIR/wikitext2/wiki.test.raw present
    spec, reason = resolve_eval_with_reason("auto", "squad", str(tmp_path))
    assert spec == "builtin" and "HF_HUB_OFFLINE=1" in reason
    assert resolve_eval("auto", str(tmp_path / "x.txt"), None) == "builtin"
    monkeypatch.setattr(D, "hub_reachable", lambda: True)
    assert resolve_eval_with_reason("auto", "mix:squad=1,c4=1", None) == (
        "wikitext2", "--eval auto: wikitext2 test split from the Hugging Face hub (reachable)")


def test_resolve_eval_explicit(tmp_path):
    assert resolve_eval("c4", "squad", None) == "c4"
    assert resolve_eval("WikiText2", "squad", None) == "wikitext2"
    assert resolve_eval("builtin", "squad", None) == "builtin"
    (tmp_path / "e.txt").write_text("x", encoding="utf-8")
    assert resolve_eval(str(tmp_path / "e.txt"), "squad", None) == str(tmp_path / "e.txt")
    with pytest.raises(UserError, match=r"--eval 'squad' is unknown; use auto, none"):
        resolve_eval("squad", "wikitext2", None)


def test_hub_reachable_is_false_offline():
    from wanda_engine.data.hub import hub_reachable

    start = time.time()
    assert hub_reachable() is False and time.time() - start < 1


# ------------------------------------------------------------------ general errors
@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(nsamples=0, seqlen=8), r"--nsamples 0 is invalid.*>= 1"),
        (dict(nsamples=-3, seqlen=8), r"--nsamples -3"),
        (dict(nsamples=2.5, seqlen=8), r"--nsamples 2.5"),
        (dict(nsamples=2, seqlen=0), r"--seqlen 0 is invalid"),
        (dict(nsamples=2, seqlen=8, seed="1"), r"--seed '1' is invalid"),
    ],
)
def test_bad_numbers(tok, kwargs, pattern):
    with pytest.raises(UserError, match=pattern):
        load_calibration("builtin", tok, **kwargs)


def test_unknown_spec_lists_names(tok):
    with pytest.raises(UserError) as e:
        load_calibration("wikitext3", tok, nsamples=1, seqlen=8)
    msg = str(e.value)
    assert "unknown calibration source 'wikitext3'" in msg and "\n" not in msg
    for name in ("boolq", "builtin", "c4", "gsm8k", "squad", "wikitext2", "hf:", "mix:"):
        assert name in msg
    with pytest.raises(UserError, match="is empty"):
        load_calibration("  ", tok, nsamples=1, seqlen=8)


def test_path_errors(tmp_path, tok):
    with pytest.raises(UserError, match="does not exist"):
        load_calibration(str(tmp_path / "missing.jsonl"), tok, nsamples=1, seqlen=8)
    with pytest.raises(UserError, match="does not exist"):
        load_calibration("missing.txt", tok, nsamples=1, seqlen=8)
    with pytest.raises(UserError, match="is a directory; pass it as --data_dir"):
        load_calibration(str(tmp_path), tok, nsamples=1, seqlen=8)
    with pytest.raises(UserError, match=r"--data_dir .* is not a directory"):
        load_calibration("squad", tok, nsamples=1, seqlen=8, data_dir=str(tmp_path / "nope"))


@pytest.mark.parametrize("spec", ["squad", "gsm8k", "boolq", "c4", "wikitext2"])
def test_missing_local_files_offline_fail_fast(tmp_path, tok, spec):
    start = time.time()
    with pytest.raises(UserError) as e:
        load_calibration(spec, tok, nsamples=1, seqlen=8, data_dir=str(tmp_path))
    msg = str(e.value)
    assert "--data_dir DIR containing" in msg and "HF_HUB_OFFLINE=1" in msg and "\n" not in msg
    assert time.time() - start < 10


def test_aliases(tok, data_dir):
    a = load_calibration("WikiText", tok, nsamples=2, seqlen=8, data_dir=data_dir)
    b = load_calibration("wikitext2", tok, nsamples=2, seqlen=8, data_dir=data_dir)
    assert a.input_ids.equal(b.input_ids)
    assert load_calibration("squad_v2", tok, nsamples=2, seqlen=8, data_dir=data_dir).input_ids.shape == (2, 8)


def test_pad_id_fallbacks():
    assert pad_token_id(types.SimpleNamespace(pad_token_id=5, eos_token_id=2)) == 5
    assert pad_token_id(types.SimpleNamespace(pad_token_id=None, eos_token_id=2)) == 2
    assert pad_token_id(types.SimpleNamespace(pad_token_id=None, eos_token_id=None)) == 0


def test_padding_with_eos_when_no_pad(tok, data_dir):
    import copy

    t2 = copy.deepcopy(tok)
    t2.pad_token = None
    assert t2.pad_token_id is None
    cs = load_calibration("gsm8k", t2, nsamples=4, seqlen=40, data_dir=data_dir)
    n = cs.attention_mask.sum(1)
    assert all(row[k:].eq(t2.eos_token_id).all() for row, k in zip(cs.input_ids, n.tolist()))
    assert "id 3" in cs.description


def test_pick_split_file():
    from wanda_engine.data.files import pick_split_file

    assert pick_split_file(["d/dev.jsonl", "d/train.jsonl", "d/test.jsonl"]) == ("d/train.jsonl", "")
    path, note = pick_split_file(["d/test.jsonl", "d/dev.jsonl"])
    assert path == "d/dev.jsonl" and "no train split" in note
    path, note = pick_split_file(["d/constraints.jsonl", "d/test.jsonl"])
    assert path == "d/test.jsonl" and note
    assert pick_split_file([]) == (None, "")
