"""Tiny models and files for tests and benchmarks; no hub, no GPU.

One importable home for the builders both tests/ and benchmarks/ use, so that neither loads the other's
files by path. Nothing here is used by the engine itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

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


def random_llama(
    *, layers: int, hidden: int, heads: int, kv_heads: int, intermediate: int, vocab: int, max_positions: int,
    seed: int = 0, pad_token_id: int | None = 0, bos_token_id: int = 1, eos_token_id: int = 2,
) -> LlamaForCausalLM:
    """A seeded random-initialised LLaMA with untied embeddings, in eval mode; transformers' default init
    (std 0.02), so activations stay finite at any depth."""
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def tiny_llama(shape: str = "gqa", vocab_size: int = TINY_VOCAB, seed: int = 0, max_positions: int = 256) -> LlamaForCausalLM:
    """A `TINY_SHAPES[shape]` LLaMA whose matrices are widened (std 0.2) so activations and scores are well spread."""
    hidden, heads, kv_heads, intermediate, blocks = TINY_SHAPES[shape]
    model = random_llama(layers=blocks, hidden=hidden, heads=heads, kv_heads=kv_heads, intermediate=intermediate,
                         vocab=vocab_size, max_positions=max_positions, seed=seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0, 0.2)
    return model


def write_random_gguf(
    path: Path, *, layers: int, hidden: int, heads: int, kv_heads: int, intermediate: int, vocab: int,
    tied: bool = False, seed: int = 0, llama3_rope: dict | None = None, extra_tensor: str | None = None,
) -> dict:
    """A random LLaMA as a GGUF file, tensor names and layout as llama.cpp writes them: Q8_0 matrices,
    F16 v_proj (a float type beside the blocks), F32 norms; a sentencepiece-style vocabulary of made-up
    tokens. With `llama3_rope` ({"factor", "low_freq_factor", "high_freq_factor",
    "original_max_position_embeddings"}), the `rope_freqs` tensor llama.cpp writes for Llama 3.x rope
    scaling; `extra_tensor` adds a tensor the model has no place for. Returns {"params", "bytes"}.
    Tensors are generated and quantized one at a time."""
    import gguf
    import numpy as np
    from gguf import GGMLQuantizationType as Q

    rng = np.random.default_rng(seed)
    kv_width = kv_heads * (hidden // heads)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("random llama")
    writer.add_block_count(layers)
    writer.add_context_length(2048)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(intermediate)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(vocab - 3)])
    writer.add_token_scores([0.0] * 3 + [-float(i) for i in range(vocab - 3)])
    writer.add_token_types([2, 3, 3] + [1] * (vocab - 3))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    params = 0

    def add(name: str, shape: tuple[int, ...], qtype=Q.Q8_0) -> None:
        nonlocal params
        values = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)
        params += values.size
        if qtype == Q.F32:
            writer.add_tensor(name, values)
        elif qtype == Q.F16:
            writer.add_tensor(name, values.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)

    add("token_embd.weight", (vocab, hidden))
    for i in range(layers):
        add(f"blk.{i}.attn_norm.weight", (hidden,), Q.F32)
        add(f"blk.{i}.attn_q.weight", (hidden, hidden))
        add(f"blk.{i}.attn_k.weight", (kv_width, hidden))
        add(f"blk.{i}.attn_v.weight", (kv_width, hidden), Q.F16)
        add(f"blk.{i}.attn_output.weight", (hidden, hidden))
        add(f"blk.{i}.ffn_norm.weight", (hidden,), Q.F32)
        add(f"blk.{i}.ffn_gate.weight", (intermediate, hidden))
        add(f"blk.{i}.ffn_up.weight", (intermediate, hidden))
        add(f"blk.{i}.ffn_down.weight", (hidden, intermediate))
    add("output_norm.weight", (hidden,), Q.F32)
    if llama3_rope is not None:
        writer.add_tensor("rope_freqs.weight", llama3_rope_factors(llama3_rope, 10000.0, hidden // heads))
    if extra_tensor is not None:
        add(extra_tensor, (hidden,), Q.F32)
    if not tied:
        add("output.weight", (vocab, hidden))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"params": params, "bytes": Path(path).stat().st_size}


def llama3_rope_factors(rope: dict, theta: float, head_dim: int):
    """By how much llama3 rope scaling divides each rotary frequency, as llama.cpp's converter computes
    the `rope_freqs` tensor of a Llama 3.x GGUF file (float32)."""
    import math

    import numpy as np

    context, low, high = rope["original_max_position_embeddings"], rope["low_freq_factor"], rope["high_freq_factor"]
    factors = []
    for frequency in 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim):
        wavelength = 2 * math.pi / frequency
        if wavelength < context / high:
            factors.append(1.0)
        elif wavelength > context / low:
            factors.append(rope["factor"])
        else:
            smooth = (context / wavelength - low) / (high - low)
            factors.append(1 / ((1 - smooth) / rope["factor"] + smooth))
    return np.array(factors, dtype=np.float32)


def write_task_files(root: str | os.PathLike) -> Path:
    """Tiny task files in the official layouts under `root` (squad/, gsm8k/, boolq/, wikitext2/), as
    `--data_dir` reads them: a few hand-made records each, for tests of the task evaluation."""
    root = Path(root)
    for folder in ("squad", "gsm8k", "boolq", "wikitext2"):
        (root / folder).mkdir(parents=True, exist_ok=True)

    def squad_file(title: str, context: str, questions: list[tuple[str, list[str]]], prefix: str) -> dict:
        qas = []
        for i, (question, answers) in enumerate(questions):
            qas.append({"question": question, "id": f"{prefix}{i}", "is_impossible": not answers,
                        "answers": [{"text": a, "answer_start": context.find(a)} for a in answers]})
        return {"version": "v2.0", "data": [{"title": title, "paragraphs": [{"context": context, "qas": qas}]}]}

    context = "The Normans were the people who gave their name to Normandy, a region in France."
    dev = squad_file("Normans", context, [
        ("In what country is Normandy located?", ["France", "France"]),
        ("Who gave their name to Normandy?", ["The Normans", "Normans"]),
        ("When did the Normans reach the moon?", []),
        ("What kind of place is Normandy?", ["a region", "region in France"]),
    ], "dev")
    train = squad_file("Steam_engine", "A steam engine performs mechanical work using steam as its working fluid.", [
        ("What does a steam engine use as its working fluid?", ["steam"]),
        ("What does a steam engine perform?", ["mechanical work"]),
    ], "train")
    (root / "squad" / "dev-v2.0.json").write_text(json.dumps(dev))
    (root / "squad" / "train-v2.0.json").write_text(json.dumps(train))

    def lines(records) -> str:
        return "".join(json.dumps(r) + "\n" for r in records)

    sums = [{"question": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
             "answer": f"Tom has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b}"} for a, b in
            [(2, 3), (5, 7), (1, 1), (10, 4), (3, 9), (6, 6), (8, 1), (4, 4)]]
    (root / "gsm8k" / "train.jsonl").write_text(lines(sums[:5]))
    (root / "gsm8k" / "test.jsonl").write_text(lines(sums[5:]))
    facts = [("is the sky blue on a clear day", "The sky on a clear day appears blue.", True),
             ("do fish live on the moon", "Fish live in water on Earth.", False),
             ("is ice frozen water", "Ice is water frozen into a solid state.", True),
             ("can a stone swim", "Stones sink in water.", False),
             ("is paris in france", "Paris is the capital of France.", True)]
    records = [{"question": q, "passage": p, "answer": a, "title": q.split()[-1]} for q, p, a in facts]
    (root / "boolq" / "train.jsonl").write_text(lines(records[:2]))
    (root / "boolq" / "dev.jsonl").write_text(lines(records[2:]))
    (root / "wikitext2" / "wiki.test.raw").write_text(" = Sample = \n\n" + SAMPLE_TEXT + "\n")
    return root
