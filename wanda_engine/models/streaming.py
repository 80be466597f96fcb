"""Memory-light streaming from safetensors shards: the model is a skeleton on the meta device, and each
decoder block is materialised from the shards only while it is being worked on.

- `SafetensorsCheckpoint` knows which shard holds which tensor and reads only the tensors asked for
  (safetensors `safe_open`; a file is open only while its tensors are read, so no shard stays mapped).
- `empty_model` builds the model with every parameter on `meta` (buffers such as the rotary
  frequencies are real: they are computed, not stored); `load_skeleton` materialises its embeddings.
- `StreamedBlocks` is the `BlockStore` prune_blocks walks: `load(i)` reads block i, `release(i)` hands
  a pruned block to the `ShardWriter` and returns its memory.
- `ShardWriter` writes the pruned model one shard per block as blocks finish (same tensor names as
  the source), then the remaining tensors, the index, config and tokenizer.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import UserError
from .blocks import blocks_prefix, decoder_blocks

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


class SafetensorsCheckpoint:
    """Tensor name → shard file of a local safetensors model directory (sharded or not). Names are the
    model's: where transformers renames checkpoint keys as it loads them (GPT-NeoX's `embed_out` is
    `lm_head`), `use_model_names` applies the same renames."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        index = self.directory / INDEX_FILE
        if index.is_file():
            self.file_of = {name: self.directory / shard for name, shard in _weight_map(index).items()}
        elif (self.directory / SINGLE_FILE).is_file():
            with _opened(self.directory / SINGLE_FILE) as handle:
                self.file_of = {name: self.directory / SINGLE_FILE for name in handle.keys()}
        else:
            raise FileNotFoundError(f"{self.directory} has no {SINGLE_FILE} or {INDEX_FILE}")
        self.stored_name = {name: name for name in self.file_of}  # model name → name in the file

    @staticmethod
    def present(directory: Path) -> bool:
        return (Path(directory) / INDEX_FILE).is_file() or (Path(directory) / SINGLE_FILE).is_file()

    def names(self) -> list[str]:
        return list(self.file_of)

    def use_model_names(self, model: nn.Module) -> None:
        """Key the tensors by the names `model` gives them, renaming as transformers does on loading.
        A checkpoint whose tensors transformers merges or splits on loading cannot be read a tensor at a
        time: refused."""
        renamed, converted = _renamed_as_on_loading(model, list(self.stored_name.values()))
        if converted:
            raise UserError(
                f"the checkpoint in {self.directory} stores {converted[0]!r} (and {len(converted) - 1} more) in a layout "
                "that transformers converts on loading, which streaming cannot do: pass --no_stream"
            )
        files = {self.stored_name[name]: path for name, path in self.file_of.items()}
        self.file_of = {renamed[stored]: files[stored] for stored in files}
        self.stored_name = {renamed[stored]: stored for stored in files}

    def read(self, names: Iterable[str], dtype: torch.dtype, device: torch.device | str) -> dict[str, torch.Tensor]:
        """The named tensors in `dtype` on `device`. Without a conversion a CPU tensor is a view of the
        file's copy-on-write memory map: only the pages read become resident (embeddings: only the rows
        looked up)."""
        by_file: dict[Path, list[str]] = defaultdict(list)
        for name in names:
            by_file[self.file_of[name]].append(name)
        tensors = {}
        for path, file_names in by_file.items():
            with _opened(path) as handle:
                for name in file_names:
                    tensor = _get_tensor(handle, self.stored_name[name], path)
                    if tensor.is_floating_point():
                        tensor = tensor.to(dtype)
                    tensors[name] = tensor.to(device)
        return tensors


def model_files(checkpoint: SafetensorsCheckpoint) -> list[Path]:
    """What the weights of a checkpoint's model come from: its config, the shard index and the shards."""
    files = {checkpoint.directory / "config.json", *checkpoint.file_of.values()}
    if (checkpoint.directory / INDEX_FILE).is_file():
        files.add(checkpoint.directory / INDEX_FILE)
    return sorted(files)


def _renamed_as_on_loading(model: nn.Module, stored: list[str]) -> tuple[dict[str, str], list[str]]:
    """(stored name → model name, the stored names a conversion would merge or split), from transformers'
    own key conversions for `model` (transformers 5; older versions load keys as they are stored)."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    except ImportError:
        return {name: name for name in stored}, []
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    expected = dict(model.state_dict())
    renamed, converted = {}, []
    for name in stored:
        new_name, converter = rename_source_key(name, renamings, converters, model.base_model_prefix, expected)
        renamed[name] = new_name
        if converter is not None:
            converted.append(name)
    return renamed, converted


def _damaged(path: Path, exc: BaseException) -> UserError:
    what = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UserError(f"model file {str(path)!r} is damaged or truncated ({what}); re-download or re-convert it")


def _weight_map(index: Path) -> dict[str, str]:
    try:
        return dict(json.loads(index.read_text())["weight_map"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise _damaged(index, exc) from None


@contextmanager
def _opened(path: Path):
    """safe_open(path) whose header errors (a damaged or truncated file) are a one-line UserError."""
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError) as exc:
        raise _damaged(path, exc) from None
    with handle:
        yield handle


def _get_tensor(handle, name: str, path: Path) -> torch.Tensor:
    try:
        return handle.get_tensor(name)
    except (SafetensorError, OSError, RuntimeError) as exc:  # e.g. the file was truncated after it was opened
        raise _damaged(path, exc) from None


def check_safetensors_files(directory: Path) -> None:
    """Open every safetensors file of a model directory (the header and its size are checked), so that
    a damaged or truncated file is a one-line error naming it before any work, not a traceback mid-run."""
    directory = Path(directory)
    index = directory / INDEX_FILE
    if index.is_file():
        files = sorted({directory / shard for shard in _weight_map(index).values()})
    else:
        files = sorted(directory.glob("*.safetensors"))
    for path in files:
        if not path.is_file():
            raise UserError(f"model file {str(path)!r} is missing (named in {INDEX_FILE}); re-download or re-convert the model")
        with _opened(path) as handle:
            handle.keys()


def _set_tensor(root: nn.Module, name: str, value: torch.Tensor) -> None:
    """Replace parameter or buffer `name` (dotted, relative to root) by `value`."""
    owner_name, _, leaf = name.rpartition(".")
    owner = root.get_submodule(owner_name) if owner_name else root
    if leaf in owner._parameters:
        owner._parameters[leaf] = nn.Parameter(value, requires_grad=False)
    else:
        owner._buffers[leaf] = value


def materialise(
    root: nn.Module, prefix: str, checkpoint: SafetensorsCheckpoint, dtype: torch.dtype, device,
    buffers: dict[str, torch.Tensor] | None = None,
) -> None:
    """Load every parameter of `root` (whose names in the checkpoint start with `prefix`) from the shards.
    With `buffers` (parameter name → tensor, filled by `release` from the previous block of the same
    shape), every parameter is copied into memory of its own, reusing those tensors: weights that
    will be pruned in place must not stay views of the file's copy-on-write map (a page fault per
    4 KiB written), and reusing one block's memory for the next keeps the heap from fragmenting."""
    wanted = {f"{prefix}{name}": name for name, _ in root.named_parameters(remove_duplicate=False)}
    missing = [full for full in wanted if full not in checkpoint.file_of]
    if missing:
        raise UserError(
            f"the checkpoint in {checkpoint.directory} has no tensor {missing[0]!r} (and {len(missing) - 1} more) that the "
            "model expects; its tensor names differ from the model's, so it cannot be streamed: pass --no_stream"
        )
    for full, tensor in checkpoint.read(wanted, dtype, device).items():
        if buffers is not None:
            tensor = _copied(tensor, buffers.pop(wanted[full], None))
        _set_tensor(root, wanted[full], tensor)


def _copied(tensor: torch.Tensor, buffer: torch.Tensor | None) -> torch.Tensor:
    if buffer is not None and (buffer.shape, buffer.dtype, buffer.device) == (tensor.shape, tensor.dtype, tensor.device):
        return buffer.copy_(tensor)
    return tensor.clone()


def release(root: nn.Module, buffers: dict[str, torch.Tensor] | None = None) -> None:
    """Put a materialised module's parameters back on the meta device; their tensors go to `buffers`
    (for the next `materialise`) when given, else their memory is freed."""
    for name, param in list(root.named_parameters(remove_duplicate=False)):
        if buffers is not None:
            buffers[name] = param.data
        _set_tensor(root, name, torch.empty(param.shape, dtype=param.dtype, device="meta"))


def empty_model(config, dtype: torch.dtype, trust_remote_code: bool) -> nn.Module:
    """The model with every parameter on meta: no memory, no weights read. Computed buffers (rotary
    frequencies) stay real: they are not stored, and some models' __init__ reads them."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights(include_buffers=False):
        return AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)


def load_skeleton(model: nn.Module, checkpoint: SafetensorsCheckpoint, dtype: torch.dtype, device: str) -> nn.Module:
    """`model` (from empty_model) made the streamed skeleton: its computed buffers moved to `device`
    and its input embeddings read (needed to capture block inputs); every other parameter stays on meta."""
    model.eval()
    checkpoint.use_model_names(model)
    for module in model.modules():
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.device.type != "meta":
                module._buffers[name] = buffer.to(device)
    embeddings = model.get_input_embeddings()
    prefix = _prefix_of(model, embeddings)
    materialise(embeddings, prefix, checkpoint, dtype, device)
    return model


def _prefix_of(model: nn.Module, target: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is target:
            return f"{name}." if name else ""
    raise ValueError(f"{type(target).__name__} is not part of {type(model).__name__}")


def load_outside_blocks(model: nn.Module, checkpoint: SafetensorsCheckpoint, dtype: torch.dtype, device) -> None:
    """Materialise every parameter outside the decoder blocks that is still on meta (the final norm, the
    output head, whatever else the model's forward uses after its blocks), so that the model's own
    forward can turn the last block's outputs into logits. A head the checkpoint does not store shares
    the input embeddings when the config ties them."""
    prefix = blocks_prefix(model)
    head = model.get_output_embeddings()
    head_name = f"{_prefix_of(model, head)}weight" if head is not None else None
    for name, param in list(model.named_parameters(remove_duplicate=False)):
        if name.startswith(prefix) or param.device.type != "meta":
            continue
        if name in checkpoint.file_of:
            _set_tensor(model, name, checkpoint.read([name], dtype, device)[name])
        elif name == head_name and getattr(model.config, "tie_word_embeddings", False):
            head.weight = model.get_input_embeddings().weight
        else:
            raise UserError(f"the checkpoint in {checkpoint.directory} has no {name}, which the model needs; pass --no_stream")


def head_is_stored(model: nn.Module, checkpoint: SafetensorsCheckpoint) -> bool:
    """Whether the checkpoint holds the output projection's own weight (an untied lm_head, which
    load_outside_blocks reads), rather than sharing the input embeddings'."""
    return f"{_prefix_of(model, model.get_output_embeddings())}weight" in checkpoint.file_of


class StreamedBlocks:
    """BlockStore over a meta skeleton: each block is read from the shards when loaded, and on release
    optionally written out (pruned) and freed."""

    def __init__(self, model: nn.Module, checkpoint: SafetensorsCheckpoint, dtype: torch.dtype, device,
                 writer: "ShardWriter | None" = None) -> None:
        self.blocks = decoder_blocks(model)
        self.prefix = blocks_prefix(model)
        self.checkpoint = checkpoint
        self.dtype = dtype
        self.device = device
        self.writer = writer
        self.heap = HeapTrimmer()
        self.buffers: dict[str, torch.Tensor] = {}  # the last released block's weights, reused by the next

    def __len__(self) -> int:
        return len(self.blocks)

    def load(self, index: int) -> nn.Module:
        block = self.blocks[index]
        materialise(block, f"{self.prefix}{index}.", self.checkpoint, self.dtype, self.device, self.buffers)
        return block

    def release(self, index: int, block: nn.Module, pruned: bool) -> None:
        if pruned and self.writer is not None:
            self.writer.write_block(index, {f"{self.prefix}{index}.{name}": t for name, t in block.state_dict().items()})
        release(block, self.buffers)
        self.heap.trim_if_grown()


def _glibc():
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc: its allocator quirks do not apply
        return None


_LIBC = _glibc()


def return_freed_memory() -> None:
    """Hand the heap memory that is free now back to the OS (glibc keeps it otherwise)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _anonymous_rss() -> int | None:
    """Bytes of resident anonymous memory (resident minus file-backed pages), from /proc/self/statm."""
    try:
        fields = Path("/proc/self/statm").read_text().split()
        return (int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class HeapTrimmer:
    """Returns freed heap memory to the OS between blocks, but only once the resident heap has grown
    by `slack` bytes since the last trim. Activations use glibc's default (heap) allocation, which
    reuses freed pages without faulting them in again: trimming after every block would return those
    pages and fault them back in on the next block (slower), never trimming lets a fragmenting heap
    creep up (a higher peak). The figures, and the alternatives tried: docs/measurements.md."""

    def __init__(self, slack: int = 128 << 20) -> None:
        self.slack = slack
        self.trimmed_at: int | None = None
        self.trims = 0

    def trim_if_grown(self) -> None:
        if _LIBC is None:
            return
        now = _anonymous_rss()
        if now is None or self.trimmed_at is None or now > self.trimmed_at + self.slack:
            return_freed_memory()
            self.trims += 1
            self.trimmed_at = _anonymous_rss()


def shard_name(index: int) -> str:
    return f"model-{index + 1:05d}.safetensors"


class ShardWriter:
    """Writes a streamed model into `directory`: one shard per decoder block as it finishes (file
    `model-<block+1>.safetensors`, so a resumed run overwrites exactly the blocks it redoes), then one
    shard with every other tensor, and the index that `from_pretrained` reads. Non-block tensors may
    also be written one group at a time before `finish` (`write_rest_part`), so that they need not
    all be in memory together."""

    def __init__(self, directory: Path, num_blocks: int) -> None:
        self.directory = Path(directory)
        self.num_blocks = num_blocks
        self.rest_parts: list[str] = []

    def write_block(self, index: int, tensors: dict[str, torch.Tensor]) -> None:
        _save_atomic(tensors, self.directory / shard_name(index))

    def write_rest_part(self, tensors: dict[str, torch.Tensor]) -> None:
        shard = f"model-rest-{len(self.rest_parts) + 1:05d}.safetensors"
        _save_atomic(tensors, self.directory / shard)
        self.rest_parts.append(shard)

    def finish(self, rest: dict[str, torch.Tensor], config, tokenizer) -> None:
        """Write the (remaining) non-block tensors, the index, config and tokenizer."""
        shards = [shard_name(index) for index in range(self.num_blocks)] + self.rest_parts
        if rest or not self.rest_parts:
            _save_atomic(rest, self.directory / shard_name(self.num_blocks))
            shards.append(shard_name(self.num_blocks))
        weight_map, total = {}, 0
        for shard in shards:
            path = self.directory / shard
            with safe_open(str(path), framework="pt") as handle:
                for name in handle.keys():
                    weight_map[name] = path.name
            total += path.stat().st_size
        index_json = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (self.directory / INDEX_FILE).write_text(json.dumps(index_json, indent=2) + "\n")
        config.save_pretrained(self.directory)
        tokenizer.save_pretrained(self.directory)


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """`tensors` (any device, any layout) as the safetensors file `path`, written beside it and renamed."""
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)


def non_block_tensors(model: nn.Module, checkpoint: SafetensorsCheckpoint, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every checkpoint tensor outside the decoder blocks (embeddings, final norm, lm_head, ...), read
    from the source: pruning does not touch them."""
    prefix = blocks_prefix(model)
    names = [name for name in checkpoint.names() if not name.startswith(prefix)]
    return checkpoint.read(names, dtype, "cpu")
