"""Tiny models and a tiny tokenizer for the engine tests (no hub, no GPU, no ../shared)."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

# name → (hidden, heads, kv heads, intermediate, blocks): one with GQA and widths that are multiples
# of 8, one whose widths are multiples of 4 but not of 8 (kernels must not assume tile-friendly sizes).
TINY_SHAPES = {
    "gqa": (64, 4, 2, 128, 3),
    "odd": (36, 3, 1, 100, 2),
}


TINY_VOCAB = 320  # the byte-level tokenizer below has 291 entries
SAMPLE_TEXT = (
    "Pruning removes weights from a trained network. Wanda scores each weight by its magnitude times the "
    "norm of the input activations it multiplies, and prunes the lowest scores in every output row. "
    "Calibration text decides which activations are large; perplexity measures what pruning cost. "
)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained in a moment on a fixed sentence: no hub, no unknown bytes."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=291, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator([SAMPLE_TEXT] * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )


def tiny_llama(shape: str = "gqa", vocab_size: int = TINY_VOCAB, seed: int = 0, max_positions: int = 256) -> LlamaForCausalLM:
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


def padded_calibration() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same three right-padded samples twice: (ids, mask) at width 10, and (ids, mask) at width 16
    with 6 extra padding positions filled with random tokens (they must not count anywhere)."""
    gen = torch.Generator().manual_seed(3)
    ids_short = torch.zeros(3, 10, dtype=torch.long)
    mask_short = torch.zeros(3, 10, dtype=torch.long)
    for row, length in enumerate([10, 6, 8]):
        ids_short[row, :length] = torch.randint(3, 291, (length,), generator=gen)
        mask_short[row, :length] = 1
    ids_long = torch.cat([ids_short, torch.randint(3, 291, (3, 6), generator=gen)], dim=1)
    mask_long = torch.cat([mask_short, torch.zeros(3, 6, dtype=torch.long)], dim=1)
    ids_long[mask_long == 0] = torch.randint(3, 291, (int((mask_long == 0).sum()),), generator=gen)
    return ids_short, mask_short, ids_long, mask_long
