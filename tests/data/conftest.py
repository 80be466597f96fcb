"""Fixtures for the data-adapter tests: a tiny word-level tokenizer and small files in the official layouts.

No hub, no network, no /work/shared: HF_HUB_OFFLINE=1 and a private datasets cache.
"""

from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import pytest  # noqa: E402
from datatest_helpers import VOCAB, c4_docs, squad_obj, wiki_lines, words, write_jsonl  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _private_datasets_cache(tmp_path_factory):
    import datasets.config

    saved = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = str(tmp_path_factory.mktemp("hf_datasets_cache"))
    yield
    datasets.config.HF_DATASETS_CACHE = saved


@pytest.fixture(scope="session")
def tok():
    """Word-level tokenizer over VOCAB; adds <s> in front like LLaMA tokenizers; pad <pad>=0, eos </s>=3."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    vocab = {t: i for i, t in enumerate(specials + VOCAB)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A --data_dir in the official layout, with every source present."""
    root = tmp_path_factory.mktemp("data_dir")
    (root / "wikitext2").mkdir()
    (root / "wikitext2" / "wiki.train.raw").write_text(wiki_lines(12, 1), encoding="utf-8")
    (root / "wikitext2" / "wiki.test.raw").write_text(wiki_lines(4, 2), encoding="utf-8")
    (root / "wikitext2" / "wiki.valid.tokens").write_text(wiki_lines(4, 3), encoding="utf-8")
    (root / "squad").mkdir()
    (root / "squad" / "train-v2.0.json").write_text(json.dumps(squad_obj(3, 0, long_context=True)), encoding="utf-8")
    (root / "squad" / "dev-v2.0.json").write_text(json.dumps(squad_obj(2, 5)), encoding="utf-8")
    write_jsonl(root / "gsm8k" / "train.jsonl",
                [{"question": words(12, 100 + i) + " ?", "answer": "ANSWERWORD #### 4"} for i in range(30)])
    write_jsonl(root / "gsm8k" / "test.jsonl",
                [{"question": words(12, 900 + i) + " ?", "answer": "ANSWERWORD #### 5"} for i in range(10)])
    write_jsonl(root / "boolq" / "train.jsonl",
                [{"question": words(8, 200 + i), "passage": words(30, 300 + i), "answer": True} for i in range(25)])
    write_jsonl(root / "boolq" / "dev.jsonl",
                [{"question": words(8, 400 + i), "title": "TITLEWORD", "answer": False, "passage": words(30, 500 + i)}
                 for i in range(10)])
    write_jsonl(root / "c4" / "c4-train.00000-of-01024.json",
                [{"text": t, "timestamp": "2019-04-25T12:57:54Z", "url": "https://x"} for t in c4_docs(40, 1)])
    write_jsonl(root / "c4" / "c4-validation.00000-of-00008.json.gz",
                [{"text": t, "timestamp": "2019-04-25T12:57:54Z", "url": "https://y"} for t in c4_docs(20, 2)], gz=True)
    return str(root)
