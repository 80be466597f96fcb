"""Test-only helpers: tiny models of other architectures, saved weights, quick run configs, padded
calibration; the tiny LLaMA and tokenizer come from wanda_engine.testing (no hub, no GPU, no ../shared)."""

from __future__ import annotations

import torch

# The builders benchmarks/ shares live in wanda_engine.testing; re-exported for the tests that import them here.
from wanda_engine.testing import (  # noqa: F401
    SAMPLE_TEXT,
    TINY_SHAPES,
    TINY_VOCAB,
    tiny_llama,
    tiny_tokenizer,
    write_random_gguf,
)


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


# Tiny models of the architectures the README's "Architectures" table names, by table key:
# (transformers class, config class, config overrides, what the engine does with it). "both": both
# schedules, streamed and not; "reference": --schedule sequential refused; "refused": refused before
# any work. README.md's table is checked against this (tests/test_architectures.py).
_COMMON = dict(
    vocab_size=TINY_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    tie_word_embeddings=False,
)
ARCHITECTURES: dict[str, tuple[str, str, dict, str]] = {
    "llama": ("LlamaForCausalLM", "LlamaConfig", {}, "both"),
    "llama31": ("LlamaForCausalLM", "LlamaConfig", {"rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64}}, "both"),
    "llama_tied": ("LlamaForCausalLM", "LlamaConfig", {"tie_word_embeddings": True}, "both"),
    "mistral": ("MistralForCausalLM", "MistralConfig", {"sliding_window": 16}, "both"),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", {}, "both"),
    "qwen3": ("Qwen3ForCausalLM", "Qwen3Config", {"head_dim": 16}, "both"),
    "olmo": ("OlmoForCausalLM", "OlmoConfig", {}, "both"),
    "olmo2": ("Olmo2ForCausalLM", "Olmo2Config", {}, "reference"),
    "phi3": ("Phi3ForCausalLM", "Phi3Config", {}, "reference"),
    "gemma2": ("Gemma2ForCausalLM", "Gemma2Config", {"head_dim": 16}, "reference"),
    "gpt_neox": ("GPTNeoXForCausalLM", "GPTNeoXConfig", {"num_key_value_heads": None}, "reference"),
    # 2-D per-head q/k norm weights (not matrices to prune) and a logit scale in the model's forward
    "cohere": ("CohereForCausalLM", "CohereConfig", {"use_qk_norm": True, "logit_scale": 0.5}, "reference"),
    "mixtral": ("MixtralForCausalLM", "MixtralConfig", {"num_local_experts": 4, "num_experts_per_tok": 2}, "refused"),
    "qwen3_moe": ("Qwen3MoeForCausalLM", "Qwen3MoeConfig", {"head_dim": 16, "num_experts": 4, "num_experts_per_tok": 2,
                                                            "moe_intermediate_size": 32}, "refused"),
    "gpt2": ("GPT2LMHeadModel", "GPT2Config", {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 256}, "refused"),
    "gemma3": ("Gemma3ForCausalLM", "Gemma3TextConfig", {
        "head_dim": 16, "sliding_window": 16, "layer_types": ["sliding_attention", "full_attention"]}, "refused"),
}


def tiny_architecture(key: str, seed: int = 0):
    """A tiny random model of `ARCHITECTURES[key]`, weights widened as in tiny_llama."""
    import transformers

    model_class, config_class, overrides, _ = ARCHITECTURES[key]
    settings = {**_COMMON, **overrides}
    if config_class == "GPT2Config":  # its own names for the sizes
        for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "max_position_embeddings"):
            settings.pop(name)
    settings = {name: value for name, value in settings.items() if value is not None}
    config = getattr(transformers, config_class)(**settings)
    torch.manual_seed(seed)
    model = getattr(transformers, model_class)(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0, 0.2)
    if config.tie_word_embeddings:
        model.tie_weights()
    return model


def save_tiny_architecture(key: str, path) -> str:
    tiny_architecture(key).save_pretrained(path, safe_serialization=True)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


def saved_weights(directory) -> dict[str, torch.Tensor]:
    """Every tensor of a saved model directory (all its safetensors shards), by name."""
    from pathlib import Path

    from safetensors.torch import load_file

    tensors = {}
    for shard in sorted(Path(directory).glob("*.safetensors")):
        tensors.update(load_file(str(shard)))
    return tensors


def tiny_run_config(model_dir: str, text_file: str, tmp_path, **overrides):
    """A PruneConfig for a quick run of a tiny model on a text file (calibration and evaluation)."""
    from wanda_engine.api import PruneConfig

    settings = dict(
        model=model_dir, calibration_dataset=text_file, eval=text_file, nsamples=6, seqlen=32, batch_size=4,
        eval_limit=5, cache_dir=str(tmp_path / "cache"), progress=False,
    )
    settings.update(overrides)
    return PruneConfig(**settings)


def text_perplexity(model_dir, text_file: str, seqlen: int, limit: int | None = None) -> float:
    """The perplexity of the model saved in `model_dir` on `text_file` (the engine's protocol), computed
    here from the saved files: what a run's report must agree with."""
    from pathlib import Path

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from wanda_engine.eval import perplexity

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = AutoTokenizer.from_pretrained(model_dir)(Path(text_file).read_text(), return_tensors="pt").input_ids[0]
    return perplexity(model, ids, seqlen, limit=limit, progress=False)[0]
