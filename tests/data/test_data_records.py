"""squad, gsm8k, boolq, json/parquet files and hf:...: variable-length samples, padding or packing."""

from __future__ import annotations

import json
import random
import time

import pytest
import torch

from wanda_engine.data import load_calibration
from wanda_engine.errors import UserError

from datatest_helpers import squad_obj, squad_pairs, words, write_jsonl

FORMATS = {
    "context": lambda c, q: c,
    "context_question": lambda c, q: f"{c} {q}",
    "template": lambda c, q: f"Context: {c}\nQuestion: {q}",
}


def expected_padded(tok, texts: list[str], nsamples: int, seqlen: int, seed: int):
    random.seed(seed)
    ids = torch.zeros(nsamples, seqlen, dtype=torch.int64)  # pad id 0
    mask = torch.zeros(nsamples, seqlen, dtype=torch.int64)
    for k in range(nsamples):
        row = tok(texts[random.randint(0, len(texts) - 1)], truncation=True, max_length=seqlen)["input_ids"]
        ids[k, : len(row)] = torch.tensor(row)
        mask[k, : len(row)] = 1
    return ids, mask


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_squad_padding_matches_restatement(tok, data_dir, fmt):
    pairs = squad_pairs(json.load(open(f"{data_dir}/squad/train-v2.0.json")))
    texts = [FORMATS[fmt](c, q) for c, q in pairs]
    cs = load_calibration("squad", tok, nsamples=12, seqlen=48, seed=4, data_dir=data_dir, squad_format=fmt)
    ids, mask = expected_padded(tok, texts, 12, 48, 4)
    assert torch.equal(cs.input_ids, ids) and torch.equal(cs.attention_mask, mask)
    assert "padding" in cs.description and "train-v2.0.json" in cs.description and fmt in cs.description


def test_squad_padding_mask_layout(tok, data_dir):
    cs = load_calibration("squad", tok, nsamples=20, seqlen=64, seed=0, data_dir=data_dir)
    lengths = cs.attention_mask.sum(1)
    for row, mask, n in zip(cs.input_ids, cs.attention_mask, lengths.tolist()):
        assert mask[:n].eq(1).all() and mask[n:].eq(0).all()  # real tokens first, then padding
        assert row[n:].eq(tok.pad_token_id).all() and row[0] == tok.bos_token_id
        assert row[:n].ne(tok.pad_token_id).all()
    assert lengths.min() < 64  # short examples are padded
    assert lengths.max() == 64  # the 400-word context is truncated to seqlen
    assert len(set(lengths.tolist())) > 2  # variable length


def test_squad_determinism(tok, data_dir):
    a = load_calibration("squad", tok, nsamples=8, seqlen=32, seed=0, data_dir=data_dir)
    b = load_calibration("squad", tok, nsamples=8, seqlen=32, seed=0, data_dir=data_dir)
    c = load_calibration("squad", tok, nsamples=8, seqlen=32, seed=9, data_dir=data_dir)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.attention_mask, b.attention_mask)
    assert not torch.equal(a.input_ids, c.input_ids)


def test_squad_packing_fills_windows(tok, data_dir):
    pairs = squad_pairs(json.load(open(f"{data_dir}/squad/train-v2.0.json")))
    cs = load_calibration("squad", tok, nsamples=6, seqlen=40, seed=1, data_dir=data_dir, packing=True)
    assert cs.attention_mask.eq(1).all() and cs.input_ids.ne(tok.pad_token_id).all()
    assert "packing" in cs.description
    # re-stated: a stream of random examples, each truncated to seqlen and followed by EOS
    random.seed(1)
    stream = []
    while len(stream) < 6 * 40:
        c, q = pairs[random.randint(0, len(pairs) - 1)]
        stream += tok(f"{c} {q}", truncation=True, max_length=40)["input_ids"] + [tok.eos_token_id]
    assert torch.equal(cs.input_ids.reshape(-1), torch.tensor(stream[: 6 * 40]))
    assert (cs.input_ids == tok.eos_token_id).any()


def test_squad_falls_back_to_present_split(tmp_path, tok):
    (tmp_path / "squad").mkdir()
    (tmp_path / "squad" / "dev-v2.0.json").write_text(json.dumps(squad_obj(1, 3)), encoding="utf-8")
    cs = load_calibration("squad", tok, nsamples=2, seqlen=16, data_dir=str(tmp_path))
    assert "dev-v2.0.json" in cs.description and "no train split" in cs.description


def test_squad_bad_layout(tmp_path, tok):
    (tmp_path / "squad").mkdir()
    (tmp_path / "squad" / "train-v2.0.json").write_text(json.dumps({"data": [{"title": "x"}]}), encoding="utf-8")
    with pytest.raises(UserError, match="official layout"):
        load_calibration("squad", tok, nsamples=2, seqlen=16, data_dir=str(tmp_path))
    (tmp_path / "squad" / "train-v2.0.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(UserError, match="not valid JSON"):
        load_calibration("squad", tok, nsamples=2, seqlen=16, data_dir=str(tmp_path))


def test_squad_bad_format(tok, data_dir):
    with pytest.raises(UserError, match=r"--calibration_format 'qa'.*context, context_question, template"):
        load_calibration("squad", tok, nsamples=2, seqlen=16, data_dir=data_dir, squad_format="qa")


def test_gsm8k_question_only(tok, data_dir):
    records = [json.loads(l) for l in open(f"{data_dir}/gsm8k/train.jsonl")]
    cs = load_calibration("gsm8k", tok, nsamples=10, seqlen=32, seed=2, data_dir=data_dir)
    ids, mask = expected_padded(tok, [r["question"] for r in records], 10, 32, 2)
    assert torch.equal(cs.input_ids, ids) and torch.equal(cs.attention_mask, mask)
    assert not (cs.input_ids == tok.convert_tokens_to_ids("ANSWERWORD")).any()
    assert "train.jsonl" in cs.description


def test_gsm8k_only_test_split_present(tmp_path, tok):
    write_jsonl(tmp_path / "gsm8k" / "test.jsonl", [{"question": words(10, i), "answer": "x"} for i in range(5)])
    cs = load_calibration("gsm8k", tok, nsamples=3, seqlen=16, data_dir=str(tmp_path))
    assert "test.jsonl" in cs.description and "no train split" in cs.description


def test_boolq_passage_and_question(tok, data_dir):
    records = [json.loads(l) for l in open(f"{data_dir}/boolq/train.jsonl")]
    cs = load_calibration("boolq", tok, nsamples=5, seqlen=64, seed=0, data_dir=data_dir)
    ids, _ = expected_padded(tok, [f"{r['passage']} {r['question']}" for r in records], 5, 64, 0)
    assert torch.equal(cs.input_ids, ids)


def test_boolq_dev_fallback_ignores_title(tmp_path, tok, data_dir):
    import shutil

    shutil.copytree(f"{data_dir}/boolq", tmp_path / "boolq")
    (tmp_path / "boolq" / "train.jsonl").unlink()
    cs = load_calibration("boolq", tok, nsamples=8, seqlen=64, data_dir=str(tmp_path))
    assert "dev.jsonl" in cs.description
    assert not (cs.input_ids == tok.convert_tokens_to_ids("TITLEWORD")).any()


def test_task_file_missing_field(tmp_path, tok):
    write_jsonl(tmp_path / "boolq" / "train.jsonl", [{"question": "w1", "answer": True}])
    with pytest.raises(UserError, match="lacks field 'passage'"):
        load_calibration("boolq", tok, nsamples=1, seqlen=8, data_dir=str(tmp_path))
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "train.jsonl").write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(UserError, match="line 1 is not a JSON object"):
        load_calibration("gsm8k", tok, nsamples=1, seqlen=8, data_dir=str(tmp_path))


def test_all_records_empty(tmp_path, tok):
    write_jsonl(tmp_path / "gsm8k" / "train.jsonl", [{"question": " ", "answer": "x"}, {"question": "", "answer": "y"}])
    with pytest.raises(UserError, match="empty"):
        load_calibration("gsm8k", tok, nsamples=1, seqlen=8, data_dir=str(tmp_path))


def test_empty_records_are_skipped(tmp_path, tok):
    write_jsonl(tmp_path / "gsm8k" / "train.jsonl", [{"question": "", "answer": "x"}, {"question": "w5 w6", "answer": "y"}])
    cs = load_calibration("gsm8k", tok, nsamples=4, seqlen=8, data_dir=str(tmp_path))
    assert cs.attention_mask.sum(1).tolist() == [3, 3, 3, 3]


# ------------------------------------------------------------------ json / parquet files
@pytest.fixture()
def records_file(tmp_path):
    recs = [{"instruction": words(5, i), "output": words(7, 50 + i), "text": words(9, 90 + i)} for i in range(12)]
    path = tmp_path / "recs.jsonl"
    write_jsonl(path, recs)
    return path, recs


def test_jsonl_text_field(tok, records_file):
    path, recs = records_file
    cs = load_calibration(str(path), tok, nsamples=6, seqlen=16, seed=3, text_field="instruction")
    ids, mask = expected_padded(tok, [r["instruction"] for r in recs], 6, 16, 3)
    assert torch.equal(cs.input_ids, ids) and torch.equal(cs.attention_mask, mask)
    assert "'instruction'" in cs.description


def test_jsonl_default_text_field_and_template(tok, records_file):
    path, recs = records_file
    cs = load_calibration(str(path), tok, nsamples=4, seqlen=32, seed=0)
    assert torch.equal(cs.input_ids, expected_padded(tok, [r["text"] for r in recs], 4, 32, 0)[0])
    template = "{instruction} = {output}"
    cs = load_calibration(str(path), tok, nsamples=4, seqlen=32, seed=0, text_template=template)
    texts = [template.format(**r) for r in recs]
    assert torch.equal(cs.input_ids, expected_padded(tok, texts, 4, 32, 0)[0])
    cs = load_calibration(str(path), tok, nsamples=3, seqlen=8, seed=0, text_template=template, packing=True)
    assert cs.attention_mask.eq(1).all()


def test_json_list_and_parquet(tmp_path, tok):
    recs = [{"body": words(6, i), "n": i} for i in range(8)]
    (tmp_path / "list.json").write_text(json.dumps(recs), encoding="utf-8")
    cs = load_calibration(str(tmp_path / "list.json"), tok, nsamples=3, seqlen=12, text_field="body")
    assert torch.equal(cs.input_ids, expected_padded(tok, [r["body"] for r in recs], 3, 12, 0)[0])
    import datasets

    datasets.Dataset.from_list(recs).to_parquet(str(tmp_path / "recs.parquet"))
    cs = load_calibration(str(tmp_path / "recs.parquet"), tok, nsamples=3, seqlen=12, text_template="{body} w{n}")
    assert torch.equal(cs.input_ids, expected_padded(tok, [f"{r['body']} w{r['n']}" for r in recs], 3, 12, 0)[0])


def test_json_field_errors(tmp_path, tok, records_file):
    path, _ = records_file
    with pytest.raises(UserError, match=r"--text_field 'prompt' is not a field.*instruction, output, text"):
        load_calibration(str(path), tok, nsamples=1, seqlen=8, text_field="prompt")
    with pytest.raises(UserError, match=r"uses field 'input'.*available fields"):
        load_calibration(str(path), tok, nsamples=1, seqlen=8, text_template="{instruction} {input}")
    with pytest.raises(UserError, match="positional"):
        load_calibration(str(path), tok, nsamples=1, seqlen=8, text_template="{} {instruction}")
    with pytest.raises(UserError, match="not a valid str.format"):
        load_calibration(str(path), tok, nsamples=1, seqlen=8, text_template="{instruction")
    with pytest.raises(UserError, match="both given"):
        load_calibration(str(path), tok, nsamples=1, seqlen=8, text_field="text", text_template="{text}")
    write_jsonl(tmp_path / "notext.jsonl", [{"a": "w1"}])
    with pytest.raises(UserError, match=r"no 'text' field.*--text_field"):
        load_calibration(str(tmp_path / "notext.jsonl"), tok, nsamples=1, seqlen=8)


def test_json_empty_and_broken(tmp_path, tok):
    (tmp_path / "empty.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(UserError):
        load_calibration(str(tmp_path / "empty.jsonl"), tok, nsamples=1, seqlen=8, text_field="text")
    (tmp_path / "broken.jsonl").write_text('{"text": "w1"}\n{oops\n', encoding="utf-8")
    with pytest.raises(UserError, match="cannot read"):
        load_calibration(str(tmp_path / "broken.jsonl"), tok, nsamples=1, seqlen=8)


# ------------------------------------------------------------------ hf:<name>
def test_hf_spec_through_datasets(monkeypatch, tok):
    import datasets

    recs = [{"q": words(5, i)} for i in range(10)]
    calls = []

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        return datasets.Dataset.from_list(recs)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cs = load_calibration("hf:org/ds:cfg:validation[:50]", tok, nsamples=4, seqlen=10, text_field="q")
    assert calls == [("org/ds", "cfg", {"split": "validation[:50]"})]
    assert torch.equal(cs.input_ids, expected_padded(tok, [r["q"] for r in recs], 4, 10, 0)[0])
    load_calibration("hf:org/ds", tok, nsamples=1, seqlen=10, text_field="q")
    assert calls[-1] == ("org/ds", None, {"split": "train"})


def test_hf_offline_fails_fast(tok):
    start = time.time()
    with pytest.raises(UserError, match=r"not in the local cache.*HF_HUB_OFFLINE=1") as e:
        load_calibration("hf:someone/nonexistent-ds", tok, nsamples=1, seqlen=8, text_field="text")
    assert time.time() - start < 10 and "\n" not in str(e.value)


@pytest.mark.parametrize("spec", ["hf:", "hf::cfg", "hf:name::train", "hf:name:cfg:"])
def test_hf_bad_syntax(tok, spec):
    with pytest.raises(UserError, match="malformed"):
        load_calibration(spec, tok, nsamples=1, seqlen=8)
