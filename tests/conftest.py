"""Shared fixtures: tiny random LLaMA models built from LlamaConfig (no hub, no GPU, no ../shared)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

# name → (hidden, heads, kv heads, intermediate, blocks): one with GQA and widths that are multiples
# of 8, one whose widths are multiples of 4 but not of 8 (kernels must not assume tile-friendly sizes).
TINY_SHAPES = {
    "gqa": (64, 4, 2, 128, 3),
    "odd": (36, 3, 1, 100, 2),
}


def tiny_llama(shape: str = "gqa", vocab_size: int = 128, seed: int = 0, max_positions: int = 256) -> LlamaForCausalLM:
    hidden, heads, kv_heads, intermediate, blocks = TINY_SHAPES[shape]
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=blocks,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    # Random init gives tiny weights around 0.02; widen them so activations and scores are well spread.
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0, 0.2)
    return model


@pytest.fixture(params=sorted(TINY_SHAPES))
def tiny_model(request) -> LlamaForCausalLM:
    return tiny_llama(request.param)
