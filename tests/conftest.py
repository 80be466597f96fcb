"""Shared fixtures for the engine tests."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
from transformers import LlamaForCausalLM

from model_helpers import SAMPLE_TEXT, TINY_SHAPES, tiny_llama, tiny_tokenizer


@pytest.fixture(params=sorted(TINY_SHAPES))
def tiny_model(request) -> LlamaForCausalLM:
    return tiny_llama(request.param)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A saved tiny LLaMA with its tokenizer: what `--model DIR` loads."""
    path = tmp_path_factory.mktemp("tiny_model")
    tiny_llama("gqa").save_pretrained(path, safe_serialization=True)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def calibration_text_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("text") / "calibration.txt"
    path.write_text(SAMPLE_TEXT * 40)
    return str(path)
