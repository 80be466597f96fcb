"""Model loading (HF id or directory, GGUF file, the embedded default) and block access."""

from .blocks import decoder_blocks, linear_layers
from .loading import LoadedModel, embedded_gguf_path, load_model

__all__ = ["LoadedModel", "decoder_blocks", "embedded_gguf_path", "linear_layers", "load_model"]
