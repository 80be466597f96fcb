"""Content digests: what identifies a run's inputs by their contents rather than by their paths (the
GGUF conversion cache key, the --resume fingerprint)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

ENDS_BYTES = 4 << 20  # hashed from each end of a large file
_SMALL_FILE = 2 * ENDS_BYTES  # hashed whole


def file_ends_digest(path: Path) -> str:
    """SHA-256 of a file's size and its first and last 4 MiB: seconds to compute for any size, and it
    changes with the header (a model file's metadata and tensor table) and the last data written."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(ENDS_BYTES))
        handle.seek(max(0, size - ENDS_BYTES))
        digest.update(handle.read(ENDS_BYTES))
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 of a small file's whole content; `file_ends_digest` for a file over 8 MiB."""
    if path.stat().st_size > _SMALL_FILE:
        return file_ends_digest(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_digest(paths: list[Path]) -> str:
    """The digest of the files `paths` (by name and `file_digest`; a missing one counts as missing)."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(f"{path.name}\0{file_digest(path) if path.is_file() else 'missing'}\0".encode())
    return digest.hexdigest()


def tensors_digest(*tensors: torch.Tensor | None) -> str:
    """SHA-256 of tensors' shapes, dtypes and values (None counts as absent)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        if tensor is None:
            digest.update(b"none\0")
            continue
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{tuple(tensor.shape)}{tensor.dtype}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def json_digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
