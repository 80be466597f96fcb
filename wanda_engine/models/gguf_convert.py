"""GGUF → plain safetensors model directory, in a child process of `load_model` (models/loading.py).

The conversion streams: one tensor at a time is read from the file (plain reads, not the memory map,
so the file's pages do not pile up in this process), dequantized to float32, renamed and un-permuted
as transformers' own GGUF loader does (`get_gguf_hf_weights_map` and the architecture's tensor
processor), and collected per decoder block; each block is written as its own shard as soon as it is
complete, the embeddings, final norm and head last, each on its own. Peak memory is therefore one
block (or the largest other tensor) plus the interpreter, whatever the model's size; transformers'
`from_pretrained` would hold the whole model in float32 at once. The output is the layout the engine
writes for a pruned streamed model (ShardWriter: a shard per block and an index), so pruning streams
from it.

    python -m wanda_engine.models.gguf_convert SOURCE.gguf EMPTY_DIR

writes the model and tokenizer into EMPTY_DIR (the parent moves it into the cache). On stdout it
prints `config_ready` once EMPTY_DIR/config.json is written, then waits for `go_on` on stdin (the
parent checks the model on its config first; by hand: `echo go_on | python -m ...`); then
`tensors <done> <total>` lines as it goes, `note: <text>` lines for the user and `peak_rss_mb <float>`
at the end. On failure it prints one line `error: <type>: <message>` on stderr. It stops at its next
tensor once its parent process is gone (the pipe it prints to breaks), so an orphaned conversion does
not keep writing into the cache. A transformers without the per-tensor GGUF helpers used here falls
back to its own loader, whole model at once (and without the config check before converting).
"""

from __future__ import annotations

import gc
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

ERROR_PREFIX = "error: "
PEAK_PREFIX = "peak_rss_mb "
PROGRESS_PREFIX = "tensors "
NOTE_PREFIX = "note: "
CONFIG_READY = "config_ready"  # then the child waits for GO_ON on stdin
GO_ON = "go_on"


class _TensorEntry(NamedTuple):
    """Where one GGUF tensor's raw data lies, and how gguf-py's reader types and shapes it."""

    name: str
    tensor_type: object  # gguf.GGMLQuantizationType
    data_offset: int
    dtype: object  # numpy dtype of the raw data (uint8 for quantized blocks)
    shape: tuple[int, ...]


def _read_tensor(handle, tensor: _TensorEntry):
    """The raw data of one GGUF tensor, read from `handle` (plain reads: a memory map would leave the
    file's pages resident in this process)."""
    import numpy as np

    count = math.prod(tensor.shape)
    handle.seek(tensor.data_offset)
    data = np.fromfile(handle, dtype=tensor.dtype, count=count)
    if data.size != count:
        raise ValueError(f"tensor {tensor.name!r} is cut short: the file ends inside it")
    return data.reshape(tensor.shape)


_DEQUANTIZE_CHUNK_ELEMENTS = 1 << 24  # 64 MB of float32 at a time


def _dequantize_by_rows(raw, tensor_type, dequantize):
    """gguf-py's `dequantize`, a few rows at a time into one float32 array: over a whole block-quantized
    tensor its temporaries take about the output's size again (a Q8_0 embedding of 128k × 8192: 4 GB
    on top of its 4 GB). Float tensors and tensors of one chunk go whole (F32 is a view, no copy)."""
    import numpy as np
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


def _check_complete(missing, unexpected, tied: bool) -> None:
    """Every weight of the model converted and nothing else (a tied lm_head is the embeddings)."""
    missing = sorted(name for name in missing if not (tied and name == "lm_head.weight"))
    unexpected = sorted(unexpected)
    if missing or unexpected:
        raise RuntimeError(f"tensors lost in conversion: missing={missing[:4]} unexpected={unexpected[:4]}")


def _per_tensor_helpers() -> tuple | None:
    """transformers' per-tensor GGUF helpers (those of its legacy loader: tensor processors, name map,
    field reader), or None where a transformers version no longer has them."""
    try:
        from transformers.modeling_gguf_pytorch_utils import (
            TENSOR_PROCESSORS,
            TensorProcessor,
            get_gguf_hf_weights_map,
            read_field,
        )
    except ImportError:
        return None
    return TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map, read_field


def convert_gguf(
    gguf: Path, out_dir: Path, report=lambda done, total: None, note=lambda text: None, config_ready=lambda: None,
) -> None:
    """Dequantize `gguf` into a plain float32 safetensors model (and tokenizer) in `out_dir`, one
    decoder block in memory at a time. `config_ready()` is called once `out_dir/config.json` is
    written, before any tensor is converted; `report(done, total)` after each tensor; `note(text)` with
    what the user should know (GGUF tensors the model has no place for)."""
    import numpy as np
    import torch
    from gguf import GGUFReader, dequantize
    from transformers import AutoConfig, AutoTokenizer

    helpers = _per_tensor_helpers()
    if helpers is None:
        note("this transformers version has no per-tensor GGUF helpers: converting the whole model at once")
        _convert_whole_model(gguf, out_dir)
        return
    TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map, read_field = helpers

    from .blocks import blocks_prefix
    from .streaming import ShardWriter, empty_model

    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config.name_or_path = gguf.stem
    config.architectures = None  # set from the built class below, as save_pretrained would
    skeleton = empty_model(config, torch.float32, trust_remote_code=False)  # names and shapes only
    config.architectures = [type(skeleton).__name__]
    config.save_pretrained(out_dir)
    config_ready()
    expected = {name: tuple(tensor.shape) for name, tensor in skeleton.state_dict().items()}

    # The tokenizer first, and of the GGUF reader only the tensor table: both parse the whole metadata
    # (SmolLM2: ~150 MB of Python objects for the vocabulary), freed before any weight is converted.
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    reader = GGUFReader(str(gguf))
    architecture = read_field(reader, "general.architecture")[0]
    table = [_TensorEntry(t.name, t.tensor_type, t.data_offset, t.data.dtype, t.data.shape) for t in reader.tensors]
    del reader
    gc.collect()
    # The processor reads the head counts from the config (Q/K un-permute); to_dict() has them.
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=config.to_dict())
    hf_name_of = get_gguf_hf_weights_map(skeleton, processor)
    wanted = [tensor for tensor in table if tensor.name in hf_name_of]
    found = {hf_name_of[tensor.name] for tensor in wanted}
    _check_complete(set(expected) - found, found - set(expected), config.tie_word_embeddings)
    unused = [tensor.name for tensor in table if tensor.name not in hf_name_of]
    if unused:  # e.g. Llama 3.1's rope_freqs (its rope scaling), which transformers' GGUF loading drops too
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
                weights = _dequantize_by_rows(_read_tensor(handle, tensor), tensor.tensor_type, dequantize)
                result = processor.process(
                    weights=weights, name=tensor.name, tensor_key_mapping=hf_name_of, parsed_parameters={"tensors": {}}
                )
                name = hf_name_of.get(result.name)
                if name is None or tuple(result.weights.shape) != expected[hf_name_of[tensor.name]]:
                    raise RuntimeError(f"GGUF tensor {tensor.name!r} does not convert one to one (architecture {architecture!r})")
                tensors[name] = torch.from_numpy(np.ascontiguousarray(result.weights, dtype=np.float32))
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


def _convert_whole_model(gguf: Path, out_dir: Path) -> None:
    """The conversion through transformers' own GGUF loading: the whole model in float32 at once.
    It flags the model as quantized (and then refuses `save_pretrained`), so a plain model is built
    on meta around the same tensors (assign=True: no second copy) and saved."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = gguf.stem
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False, assign=True)
    _check_complete(missing, unexpected, config.tie_word_embeddings)
    plain.tie_weights()
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"{ERROR_PREFIX}usage: python -m wanda_engine.models.gguf_convert SOURCE.gguf EMPTY_DIR", file=sys.stderr)
        return 2

    # Printed as they come: the parent follows them. Once the parent is gone, a write fails
    # (BrokenPipeError), so an orphaned conversion stops at its next tensor.
    def report(done: int, total: int) -> None:
        print(f"{PROGRESS_PREFIX}{done} {total}", flush=True)

    def note(text: str) -> None:
        print(f"{NOTE_PREFIX}{text}", flush=True)

    def config_ready() -> None:  # the parent checks the model on its config before it is converted
        print(CONFIG_READY, flush=True)
        if sys.stdin.readline().strip() != GO_ON:
            raise RuntimeError("stopped before converting: the parent process refused the model or is gone")

    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        convert_gguf(Path(argv[0]), Path(argv[1]), report, note, config_ready)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        lines = str(exc).strip().splitlines()
        kind = type(exc).__qualname__
        if type(exc).__module__ != "builtins":  # e.g. struct.error, not a bare "error"
            kind = f"{type(exc).__module__}.{kind}"
        print(f"{ERROR_PREFIX}{kind}: {lines[0] if lines else '(no message)'}", file=sys.stderr)
        return 1
    from wanda_engine.memory import peak_rss_mb

    print(f"{PEAK_PREFIX}{peak_rss_mb():.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
