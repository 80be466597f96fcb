"""GGUF conversion: it streams a block at a time and gives what transformers' GGUF loading gives; its
cache is keyed by the file's content, not its path or mtime; a conversion that fails (it runs in a
child process) is a one-line error and caches nothing."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import cli
from benchmarks.sides import write_random_gguf
from model_helpers import TINY_SHAPES
from wanda_engine.errors import UserError
from wanda_engine.models import gguf_convert, loading
from wanda_engine.digests import ENDS_BYTES as _GGUF_KEY_BYTES
from wanda_engine.models.loading import _child_failure, _gguf_cache_dir, load_model
from wanda_engine.models.streaming import ShardWriter


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
    assert re.search(r"failed \([\w.]+: ", message)  # the child's own one-line error: exception type, message
    converted = cache / "converted"
    assert not converted.exists() or not any(converted.iterdir())


def test_interrupted_conversion_stops_the_child_and_leaves_nothing(tmp_path, monkeypatch):
    broken = _write(tmp_path / "model.gguf", b"GGUF\x03\x00\x00\x00truncated")
    children = []

    def interrupted(child, *args, **kwargs):  # Ctrl-C while the child runs
        children.append(child)
        raise KeyboardInterrupt

    monkeypatch.setattr(loading, "_follow_child", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_model(str(broken), cache_dir=tmp_path / "cache", log=lambda _message: None)
    assert len(children) == 1 and children[0].returncode == -signal.SIGTERM  # stopped (still importing) and reaped
    assert list((tmp_path / "cache" / "converted").iterdir()) == []  # its temporary directory is gone


def test_child_failure_names_the_cause():
    assert _child_failure(1, "a warning\nerror: ValueError: bad header\nmore noise\n") == "ValueError: bad header"
    assert "SIGKILL" in _child_failure(-9, "") and "memory" in _child_failure(-9, "")
    assert "signal 40" in _child_failure(-40, "")  # real-time signals have no name
    assert _child_failure(3, "") == "the converter exited with code 3"


def test_converter_reports_a_failure_as_one_line(tmp_path, capsys):
    broken = _write(tmp_path / "broken.gguf", b"GGUF\x03\x00\x00\x00truncated")
    assert gguf_convert.main([str(broken), str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(gguf_convert.ERROR_PREFIX) and captured.out == ""


def write_tiny_gguf(path, *, blocks: int, tied: bool = True, rope_freqs: bool = False) -> None:
    hidden, heads, kv_heads, intermediate, _ = TINY_SHAPES["gqa"]
    write_random_gguf(path, layers=blocks, hidden=hidden, heads=heads, kv_heads=kv_heads, intermediate=intermediate,
                      vocab=64, tied=tied, rope_freqs=rope_freqs)


@pytest.mark.parametrize("tied", [True, False])
def test_streamed_conversion_equals_transformers_gguf_loading(tmp_path, monkeypatch, tied):
    """Tensor for tensor what transformers' own GGUF loading gives (names, Q/K un-permuted, F16 and
    Q8_0 dequantized), written a block at a time: each shard holds one block's tensors, handed over
    as soon as that block is complete, and the directory loads with from_pretrained."""
    source = tmp_path / "tiny.gguf"
    write_tiny_gguf(source, blocks=3, tied=tied)
    written, rest_parts = [], []
    write_block, write_rest_part = ShardWriter.write_block, ShardWriter.write_rest_part
    monkeypatch.setattr(ShardWriter, "write_block", lambda self, i, tensors: (written.append((i, sorted(tensors))), write_block(self, i, tensors)))
    monkeypatch.setattr(ShardWriter, "write_rest_part", lambda self, tensors: (rest_parts.append(sorted(tensors)), write_rest_part(self, tensors)))
    out = tmp_path / "out"
    out.mkdir()
    reported = []
    gguf_convert.convert_gguf(source, out, lambda done, total: reported.append((done, total)))

    expected = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=source.name, dtype=torch.float32).state_dict()
    converted = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    assert converted.config.tie_word_embeddings is tied
    assert set(converted.state_dict()) == set(expected)
    for name, tensor in converted.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert [i for i, _ in written] == [0, 1, 2]
    assert all(all(name.startswith(f"model.layers.{i}.") for name in names) and len(names) == 9 for i, names in written)
    assert sorted(rest_parts) == [[name] for name in sorted(["model.embed_tokens.weight", "model.norm.weight"] + ([] if tied else ["lm_head.weight"]))]
    assert reported[-1] == (len(expected) - tied, len(expected) - tied) and len(reported) == reported[-1][1]
    assert AutoTokenizer.from_pretrained(str(out))("ab c").input_ids == AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=source.name)("ab c").input_ids


def test_gguf_model_loads_streamed_with_a_progress_bar(tmp_path, capsys):
    source = tmp_path / "tiny.gguf"
    write_tiny_gguf(source, blocks=2, rope_freqs=True)
    loaded = load_model(str(source), cache_dir=tmp_path / "cache", stream=True, log=print)
    captured = capsys.readouterr()
    assert "converting tiny.gguf" in captured.err and "20/20" in captured.err  # the bar, at its end
    assert loaded.streamed and "peak RSS" in captured.out
    # a tensor the model has no place for is named, not dropped silently
    assert "note: GGUF tensors with no place in LlamaForCausalLM, not converted: rope_freqs.weight" in captured.out
    assert not list((tmp_path / "cache" / "converted").glob(".tmp-*"))


def test_orphaned_temporary_directories_are_removed(tmp_path):
    converted = tmp_path / "cache" / "converted"
    child = subprocess.Popen(["true"])
    child.wait()  # a pid that no longer runs
    orphan = converted / f"{loading._tmp_prefix()}{child.pid}-abc"
    alive = converted / f"{loading._tmp_prefix()}{os.getpid()}-def"  # a conversion still running (this process)
    elsewhere = converted / f".tmp-other-host-{child.pid}-ghi"  # another machine's, on a shared cache
    for path in (orphan, alive, elsewhere):
        (path / "sub").mkdir(parents=True)
    source = tmp_path / "tiny.gguf"
    write_tiny_gguf(source, blocks=1)
    load_model(str(source), cache_dir=tmp_path / "cache", log=lambda _message: None, progress=False)
    assert not orphan.exists() and alive.exists() and elsewhere.exists()


def test_conversion_without_per_tensor_helpers_loads_the_whole_model(tmp_path, monkeypatch):
    """Where a transformers version lacks the per-tensor GGUF helpers, the conversion goes through its
    own loader (whole model at once) and gives the same tensors."""
    source = tmp_path / "tiny.gguf"
    write_tiny_gguf(source, blocks=2, tied=False)
    streamed, whole = tmp_path / "streamed", tmp_path / "whole"
    for out in (streamed, whole):
        out.mkdir()
    gguf_convert.convert_gguf(source, streamed)
    monkeypatch.setattr(gguf_convert, "_per_tensor_helpers", lambda: None)
    notes = []
    gguf_convert.convert_gguf(source, whole, note=notes.append)
    assert "whole model at once" in notes[0]
    expected = AutoModelForCausalLM.from_pretrained(str(streamed), dtype=torch.float32).state_dict()
    for name, tensor in AutoModelForCausalLM.from_pretrained(str(whole), dtype=torch.float32).state_dict().items():
        assert torch.equal(tensor, expected[name]), name


def test_gguf_model_is_refused_on_its_config_before_any_tensor_is_converted(tmp_path):
    source = tmp_path / "tiny.gguf"
    write_tiny_gguf(source, blocks=2)
    seen = []

    def refuse(structure):
        directory = next((tmp_path / "cache" / "converted").glob(".tmp-*"))
        seen.append((structure.config.num_hidden_layers, sorted(p.name for p in directory.iterdir())))
        raise UserError("--sparsity_type 3:7: does not fit")

    with pytest.raises(UserError, match="3:7"):
        load_model(str(source), cache_dir=tmp_path / "cache", check=refuse, log=lambda _message: None, progress=False)
    assert seen == [(2, ["config.json"])]  # checked once, on the converted config, before any shard
    assert list((tmp_path / "cache" / "converted").iterdir()) == []  # the conversion stopped, nothing left

    checked = []
    loaded = load_model(str(source), cache_dir=tmp_path / "cache", check=checked.append, stream=True,
                        log=lambda _message: None, progress=False)
    assert len(checked) == 1 and loaded.model is checked[0]  # checked once; that structure is the skeleton


def test_cache_command_lists_and_removes_conversions(tmp_path, capsys):
    cache = tmp_path / "cache"
    source = tmp_path / "tiny.gguf"
    write_tiny_gguf(source, blocks=1)
    loaded = load_model(str(source), cache_dir=cache, log=lambda _message: None, progress=False)
    (name,) = [path.name for path in (cache / "converted").iterdir() if not path.name.startswith(".")]
    assert cli.main(["cache", "--cache_dir", str(cache)]) == 0
    listed = capsys.readouterr().out
    assert f"converted/{name}" in listed and "MB" in listed

    assert cli.main(["cache", "--cache_dir", str(cache), "--remove", name, "other"]) == 2  # one unknown name
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'other'" in err and "python cli.py cache" in err
    assert (cache / "converted" / name).is_dir()  # nothing removed

    # The loaded model reads the conversion (a streamed run does until its end): removing it is refused.
    assert cli.main(["cache", "--cache_dir", str(cache), "--remove", name]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "in use" in err and (cache / "converted" / name).is_dir()
    loaded.close()

    assert cli.main(["cache", "--cache_dir", str(cache), "--remove", name]) == 0
    out = capsys.readouterr().out
    assert "removed 1 conversion(s)" in out and "no GGUF conversions" in out
    assert list((cache / "converted").iterdir()) == []


def test_child_killed_during_the_config_check_is_a_one_line_error(tmp_path, monkeypatch):
    source = tmp_path / "tiny.gguf"
    write_tiny_gguf(source, blocks=1)
    children = []

    class Recorded(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            children.append(self)

    def kill_child(_structure):  # e.g. the OOM killer, while the parent checks the config
        children[0].kill()
        children[0].wait()

    monkeypatch.setattr(loading.subprocess, "Popen", Recorded)
    with pytest.raises(UserError, match="killed by SIGKILL"):
        load_model(str(source), cache_dir=tmp_path / "cache", check=kill_child, log=lambda _message: None, progress=False)
    assert list((tmp_path / "cache" / "converted").iterdir()) == []


@pytest.mark.parametrize("qtype", ["F32", "F16", "BF16", "Q8_0", "Q4_1"])
def test_dequantize_by_rows_equals_whole_tensor_dequantize(monkeypatch, qtype):
    import gguf
    import numpy as np

    monkeypatch.setattr(gguf_convert, "_DEQUANTIZE_CHUNK_ELEMENTS", 3 * 64)  # 3 rows of 64 per chunk
    kind = gguf.GGMLQuantizationType[qtype]
    values = np.random.default_rng(0).standard_normal((2, 5, 64)).astype(np.float32)
    raw = values.astype(np.float16) if qtype == "F16" else values if qtype == "F32" else gguf.quants.quantize(values, kind)
    for data in (raw, raw[0, 0]):  # 3-D (10 rows: 4 chunks) and 1-D
        by_rows = gguf_convert._dequantize_by_rows(data, kind, gguf.dequantize)
        whole = gguf.dequantize(data, kind)
        assert by_rows.dtype == np.float32 and by_rows.shape == whole.shape and np.array_equal(by_rows, whole)
