"""The GGUF conversion cache is keyed by the file's content, not its path or mtime; a conversion that
fails (it runs in a child process) is a one-line error and caches nothing."""

from __future__ import annotations

import os
import shutil

import pytest

from wanda_engine.errors import UserError
from wanda_engine.models.loading import _GGUF_KEY_BYTES, _gguf_cache_dir, load_model


def _write(path, payload: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def test_same_content_elsewhere_shares_the_cache_dir(tmp_path):
    payload = os.urandom(3 * _GGUF_KEY_BYTES)
    first = _write(tmp_path / "venv1" / "model.gguf", payload)
    second = tmp_path / "venv2" / "model.gguf"
    second.parent.mkdir()
    shutil.copyfile(first, second)
    os.utime(second, (1, 1))  # another install time
    assert _gguf_cache_dir(first, tmp_path / "cache") == _gguf_cache_dir(second, tmp_path / "cache")


def test_other_content_or_size_gets_another_cache_dir(tmp_path):
    payload = bytearray(os.urandom(3 * _GGUF_KEY_BYTES))
    base = _gguf_cache_dir(_write(tmp_path / "a" / "model.gguf", bytes(payload)), tmp_path)
    payload[0] ^= 1  # header
    head = _gguf_cache_dir(_write(tmp_path / "b" / "model.gguf", bytes(payload)), tmp_path)
    payload[0] ^= 1
    payload[-1] ^= 1  # last tensor data
    tail = _gguf_cache_dir(_write(tmp_path / "c" / "model.gguf", bytes(payload)), tmp_path)
    longer = _gguf_cache_dir(_write(tmp_path / "d" / "model.gguf", bytes(payload) + b"\0"), tmp_path)
    small = _gguf_cache_dir(_write(tmp_path / "e" / "model.gguf", b"tiny"), tmp_path)  # shorter than the window
    assert len({base, head, tail, longer, small}) == 5
    assert base.name.startswith("model-")


def test_broken_gguf_is_a_one_line_error_and_caches_nothing(tmp_path):
    broken = _write(tmp_path / "broken.gguf", b"GGUF\x03\x00\x00\x00truncated")
    cache = tmp_path / "cache"
    with pytest.raises(UserError) as raised:
        load_model(str(broken), cache_dir=cache, log=lambda _message: None)
    message = str(raised.value)
    assert "broken.gguf" in message and "conversion to safetensors failed" in message and "\n" not in message
    converted = cache / "converted"
    assert not converted.exists() or not any(converted.iterdir())
