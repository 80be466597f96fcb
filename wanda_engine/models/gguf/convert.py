"""GGUF → a plain float32 safetensors model directory, one decoder block in memory at a time (run in a
child process: protocol.py).

One tensor at a time is read from the file (plain reads, not the memory map, so the file's pages do not
pile up in this process), dequantized with gguf-py, renamed with gguf-py's tensor name map and turned
back into the Hugging Face layout where llama.cpp's converter changed it (the Q/K rows of "llama"
files, Gemma's norm weights); each decoder block is written as its own shard as soon as it is complete,
the embeddings, final norm and head last, each on its own. Peak memory is one block (or the largest
other tensor) plus the interpreter, whatever the model's size. The output is the layout the engine
writes for a pruned streamed model (ShardWriter: a shard per block and an index), so pruning streams
from it. The config and tokenizer come from transformers' GGUF support; a Llama 3.x file's rope
scaling, which llama.cpp stores as the `rope_freqs` tensor, is turned back into the config's llama3
rope parameters (and checked to reproduce those factors).
"""

from __future__ import annotations

import gc
import itertools
import math
from collections import defaultdict
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

# GGUF architectures whose tensors llama.cpp's converter changed on the way in, and how to undo it;
# every other one the engine can prune is stored as in Hugging Face's layout.
_QK_PERMUTED = {"llama"}
_NORMS_PLUS_ONE = {"gemma2", "gemma3"}  # llama.cpp stores Gemma's (1 + weight) norm scale
# GGUF architectures whose layout needs conversions this converter does not make (and that the engine
# refuses anyway: mixtures of experts, encoder-decoders, non-transformers).
_UNSUPPORTED = {"qwen2moe", "qwen3moe", "gpt-oss", "bloom", "t5", "t5encoder", "gpt2", "mamba", "nemotron", "lfm2",
                "minimax-m2"}
# transformers' model_type → gguf-py's architecture name, where they differ
_GGUF_ARCHITECTURE = {"cohere": "command-r", "gemma3_text": "gemma3"}
_ROPE_FREQS = "rope_freqs.weight"


class _TensorEntry(NamedTuple):
    """Where one GGUF tensor's raw data lies, and how gguf-py's reader types and shapes it."""

    name: str
    tensor_type: object  # gguf.GGMLQuantizationType
    data_offset: int
    dtype: object  # numpy dtype of the raw data (uint8 for quantized blocks)
    shape: tuple[int, ...]


def _read_tensor(handle, tensor: _TensorEntry) -> np.ndarray:
    """The raw data of one GGUF tensor, read from `handle` (plain reads: a memory map would leave the
    file's pages resident in this process)."""
    count = math.prod(tensor.shape)
    handle.seek(tensor.data_offset)
    data = np.fromfile(handle, dtype=tensor.dtype, count=count)
    if data.size != count:
        raise ValueError(f"tensor {tensor.name!r} is cut short: the file ends inside it")
    return data.reshape(tensor.shape)


_DEQUANTIZE_CHUNK_ELEMENTS = 1 << 24  # 64 MB of float32 at a time


def dequantize_by_rows(raw: np.ndarray, tensor_type, dequantize) -> np.ndarray:
    """gguf-py's `dequantize`, a few rows at a time into one float32 array: over a whole block-quantized
    tensor its temporaries take about the output's size again. Float tensors and tensors of one chunk
    go whole (F32 is a view, no copy)."""
    from gguf import GGML_QUANT_SIZES

    if raw.dtype == np.uint8:  # blocks (or bf16) as bytes
        block_elements, block_bytes = GGML_QUANT_SIZES[tensor_type]
        width = raw.shape[-1] // block_bytes * block_elements
    else:
        width = raw.shape[-1]
    rows = raw.reshape(-1, raw.shape[-1]) if raw.ndim > 1 else raw.reshape(1, -1)
    step = max(1, _DEQUANTIZE_CHUNK_ELEMENTS // width)
    if raw.dtype != np.uint8 or rows.shape[0] <= step:
        return dequantize(raw, tensor_type)
    out = np.empty((rows.shape[0], width), dtype=np.float32)
    for start in range(0, rows.shape[0], step):
        out[start:start + step] = dequantize(rows[start:start + step], tensor_type)
    return out.reshape(*raw.shape[:-1], width)


def gguf_architecture(model_type: str) -> str:
    return _GGUF_ARCHITECTURE.get(model_type, model_type)


def hf_names(model, architecture: str) -> dict[str, str]:
    """GGUF tensor name → the model's parameter name, from gguf-py's tensor name map (which maps
    Hugging Face module names to GGUF's `blk.N.attn_q`-style names)."""
    from gguf import MODEL_ARCH_NAMES, get_tensor_name_map

    arch = next((key for key, name in MODEL_ARCH_NAMES.items() if name == architecture), None)
    if arch is None:
        raise ValueError(f"GGUF architecture {architecture!r} is unknown to this gguf-py; upgrade the gguf package")
    name_map = get_tensor_name_map(arch, model.config.num_hidden_layers)
    names = {}
    for name in model.state_dict():
        module, _, kind = name.rpartition(".")  # e.g. model.layers.0.self_attn.q_proj  weight
        gguf_module = name_map.get_name(module)
        if gguf_module is not None:
            names[f"{gguf_module}.{kind}"] = name
    return names


def unpermute_qk(weights: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (rotary halves interleaved per head) for `heads` heads."""
    half = weights.shape[0] // heads // 2
    return weights.reshape(heads, half, 2, *weights.shape[1:]).swapaxes(2, 1).reshape(weights.shape)


def to_hf_layout(weights: np.ndarray, gguf_name: str, architecture: str, config) -> np.ndarray:
    """A dequantized GGUF tensor in the Hugging Face model's layout."""
    if architecture in _QK_PERMUTED and (".attn_q." in gguf_name or ".attn_k." in gguf_name):
        heads = config.num_attention_heads
        if ".attn_k." in gguf_name:
            heads = getattr(config, "num_key_value_heads", None) or heads
        return unpermute_qk(weights, heads)
    if architecture in _NORMS_PLUS_ONE and "norm.weight" in gguf_name:
        return weights - 1
    return weights


def llama3_rope_parameters(factors: np.ndarray, theta: float, head_dim: int) -> dict | None:
    """The llama3 rope parameters that give `factors` (llama.cpp's `rope_freqs`: by how much each rotary
    frequency is divided), None when they divide none. The factors depend only on `factor` and on the
    wavelengths context / low_freq_factor and context / high_freq_factor where the smooth part ends and
    starts, so low_freq_factor is set to 1 (as in Llama 3.x configs) and the context and
    high_freq_factor are found from the smooth part, or, with fewer than two points in it, chosen to fit
    where the factors step; whatever is found must give `factors` back."""
    factors = np.asarray(factors, dtype=np.float64)
    factor = float(factors.max())
    if not np.isfinite(factors).all() or factors.min() < 1 - 1e-6:
        raise ValueError("llama3 rope scaling never speeds a frequency up (factors below 1)")
    if factor <= 1 + 1e-6:
        return None
    wavelengths = 2 * math.pi * theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    for context, high in _llama3_candidates(factors, factor, wavelengths):
        # round values where they fit, as configs write them (4.0, not 3.9999994 from the fit)
        for original, high_factor in itertools.product((int(round(context)), float(context)), (round(high, 3), float(high))):
            parameters = {
                "rope_type": "llama3", "rope_theta": theta, "factor": factor, "low_freq_factor": 1.0,
                "high_freq_factor": high_factor, "original_max_position_embeddings": original,
            }
            if high_factor > 1 and np.allclose(_llama3_factors(parameters, wavelengths), factors, rtol=2e-6, atol=0):
                return parameters
    raise ValueError("they do not follow the llama3 rope scaling")


def _llama3_candidates(factors: np.ndarray, factor: float, wavelengths: np.ndarray):
    """(context, high_freq_factor) pairs that may give `factors` with low_freq_factor 1."""
    unscaled, scaled = factors <= 1 + 1e-6, factors >= factor * (1 - 1e-6)
    smooth = ~unscaled & ~scaled
    # In the smooth part 1/f = (1 - s)/factor + s with s = (context/wavelength - 1)/(high - 1).
    share = (1 / factors[smooth] - 1 / factor) / (1 - 1 / factor)
    if smooth.sum() >= 2:  # a line in 1/wavelength
        slope, intercept = np.polyfit(1 / wavelengths[smooth], share, 1)
        if intercept < 0:
            yield -slope / intercept, 1 - 1 / intercept
        return
    longest_unscaled = wavelengths[unscaled].max() if unscaled.any() else 0.0
    shortest_scaled = wavelengths[scaled].min()
    if smooth.any():
        # One point w with share s: the context lies above w and below the shortest scaled wavelength,
        # high follows from s, and the longest unscaled wavelength must stay below context / high
        # (true for any context when s·w exceeds it, else below a bound). The largest context allowed
        # gives the largest high, the one that rounds least in transformers' float32 arithmetic.
        point, point_share = float(wavelengths[smooth][0]), float(share[0])
        limit = shortest_scaled
        if point_share * point < longest_unscaled:
            limit = min(limit, longest_unscaled * point * (1 - point_share) / (longest_unscaled - point_share * point))
        contexts = [c for c in range(math.ceil(limit) - 1, math.floor(point), -1)][:3] or [(point + limit) / 2]
        for context in contexts:
            yield context, 1 + (context / point - 1) / point_share
    elif unscaled.any():  # a step: both boundaries between the two wavelengths around it
        contexts = [c for c in range(math.ceil(shortest_scaled) - 1, math.floor(longest_unscaled), -1)][:3]
        for context in contexts or [math.sqrt(longest_unscaled * shortest_scaled)]:
            yield context, (1 + context / longest_unscaled) / 2
    else:  # every frequency divided by factor
        yield shortest_scaled / 2, 1.5


def _llama3_factors(parameters: dict, wavelengths: np.ndarray) -> np.ndarray:
    """By how much transformers' llama3 rope divides each frequency (its formula, on these wavelengths)."""
    context = parameters["original_max_position_embeddings"]
    low, high, factor = parameters["low_freq_factor"], parameters["high_freq_factor"], parameters["factor"]
    smooth = (context / wavelengths - low) / (high - low)
    divisor = 1 / ((1 - smooth) / factor + smooth)
    return np.where(wavelengths < context / high, 1.0, np.where(wavelengths > context / low, factor, divisor))


def _check_complete(missing, tied: bool) -> None:
    """Every weight of the model has a GGUF tensor (a tied lm_head is the embeddings)."""
    missing = sorted(name for name in missing if not (tied and name == "lm_head.weight"))
    if missing:
        raise RuntimeError(f"the GGUF file has no tensor for {', '.join(missing[:4])}" + (" ..." if len(missing) > 4 else ""))


def convert_gguf(
    gguf: Path, out_dir: Path, report: Callable[[int, int], None] = lambda done, total: None,
    note: Callable[[str], None] = lambda text: None, config_ready: Callable[[], None] = lambda: None,
) -> None:
    """Dequantize `gguf` into a plain float32 safetensors model (and tokenizer) in `out_dir`, one
    decoder block in memory at a time. `config_ready()` is called once `out_dir/config.json` is
    written, before any tensor is converted; `report(done, total)` after each tensor; `note(text)` with
    what the user should know (GGUF tensors the model has no place for)."""
    import torch
    from gguf import GGUFReader, dequantize
    from transformers import AutoConfig, AutoTokenizer

    from ..blocks import blocks_prefix
    from ..streaming import ShardWriter, empty_model

    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    architecture = gguf_architecture(config.model_type)
    if architecture in _UNSUPPORTED:
        raise ValueError(f"GGUF architecture {architecture!r} is not supported; convert the model to safetensors "
                         "with transformers and pass its directory")
    reader = GGUFReader(str(gguf))
    table = [_TensorEntry(t.name, t.tensor_type, t.data_offset, t.data.dtype, t.data.shape) for t in reader.tensors]
    rope_freqs = next((np.array(t.data, dtype=np.float32) for t in reader.tensors if t.name == _ROPE_FREQS), None)
    # Of the reader only the tensor table is kept: it parses the whole metadata (the vocabulary as
    # Python objects: docs/measurements.md), freed before any weight is converted.
    del reader
    gc.collect()
    if rope_freqs is not None:
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        theta = float(config.rope_parameters["rope_theta"]) if getattr(config, "rope_parameters", None) else float(config.rope_theta)
        try:
            rope = llama3_rope_parameters(rope_freqs, theta, head_dim)
        except ValueError as exc:
            raise ValueError(f"its rope_freqs tensor cannot be expressed as rope parameters: {exc}") from None
        if rope is not None:
            config.rope_parameters = rope
            note(f"rope scaling from the GGUF's rope_freqs: llama3, factor {rope['factor']:g}, "
                 f"original context {rope['original_max_position_embeddings']}")
    config.name_or_path = gguf.stem
    config.architectures = None  # set from the built class below, as save_pretrained would
    skeleton = empty_model(config, torch.float32, trust_remote_code=False)  # names and shapes only
    config.architectures = [type(skeleton).__name__]
    config.save_pretrained(out_dir)
    config_ready()
    expected = {name: tuple(tensor.shape) for name, tensor in skeleton.state_dict().items()}

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    gc.collect()
    hf_name_of = hf_names(skeleton, architecture)
    wanted = [tensor for tensor in table if tensor.name in hf_name_of]
    found = {hf_name_of[tensor.name] for tensor in wanted}
    _check_complete(set(expected) - found, config.tie_word_embeddings)
    unused = [t.name for t in table if t.name not in hf_name_of and not (t.name == _ROPE_FREQS and rope_freqs is not None)]
    if unused:
        note(f"GGUF tensors with no place in {type(skeleton).__name__}, not converted: {', '.join(unused[:6])}"
             + (f" and {len(unused) - 6} more" if len(unused) > 6 else ""))

    # Group by decoder block (GGUF files list tensors in no guaranteed order); everything else last.
    prefix = blocks_prefix(skeleton)
    num_blocks = config.num_hidden_layers
    groups: dict[int, list] = defaultdict(list)
    for tensor in wanted:
        name = hf_name_of[tensor.name]
        block = int(name[len(prefix):].split(".", 1)[0]) if name.startswith(prefix) else num_blocks
        groups[block].append(tensor)

    writer = ShardWriter(out_dir, num_blocks)
    done, total = 0, len(wanted)
    with open(gguf, "rb") as handle:
        for block in range(num_blocks + 1):
            tensors: dict[str, torch.Tensor] = {}
            for tensor in groups.get(block, []):
                name = hf_name_of[tensor.name]
                weights = dequantize_by_rows(_read_tensor(handle, tensor), tensor.tensor_type, dequantize)
                weights = to_hf_layout(weights, tensor.name, architecture, config)
                if tuple(weights.shape) != expected[name]:
                    raise RuntimeError(f"GGUF tensor {tensor.name!r} has shape {tuple(weights.shape)}, the model's "
                                       f"{name} {expected[name]} (architecture {architecture!r})")
                tensors[name] = torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float32))
                done += 1
                report(done, total)
                if block == num_blocks:  # embeddings and head (each can be GBs): written one at a time
                    writer.write_rest_part(tensors)
                    tensors = {}
            if block < num_blocks:
                writer.write_block(block, tensors)
    writer.finish({}, config, tokenizer)
    if skeleton.can_generate():
        skeleton.generation_config.save_pretrained(out_dir)
