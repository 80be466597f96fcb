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
from model_helpers import TINY_SHAPES, write_random_gguf
from wanda_engine.errors import UserError
from wanda_engine.models.gguf import cache as gguf_cache
from wanda_engine.models.gguf import convert as gguf_convert
from wanda_engine.models.gguf import protocol
from wanda_engine.digests import ENDS_BYTES as _GGUF_KEY_BYTES
from wanda_engine.models.loading import load_model
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
    assert gguf_cache.conversion_dir(first, tmp_path / "cache") == gguf_cache.conversion_dir(second, tmp_path / "cache")


def test_other_content_or_size_gets_another_cache_dir(tmp_path):
    payload = bytearray(os.urandom(3 * _GGUF_KEY_BYTES))
    base = gguf_cache.conversion_dir(_write(tmp_path / "a" / "model.gguf", bytes(payload)), tmp_path)
    payload[0] ^= 1  # header
    head = gguf_cache.conversion_dir(_write(tmp_path / "b" / "model.gguf", bytes(payload)), tmp_path)
    payload[0] ^= 1
    payload[-1] ^= 1  # last tensor data
    tail = gguf_cache.conversion_dir(_write(tmp_path / "c" / "model.gguf", bytes(payload)), tmp_path)
    longer = gguf_cache.conversion_dir(_write(tmp_path / "d" / "model.gguf", bytes(payload) + b"\0"), tmp_path)
    small = gguf_cache.conversion_dir(_write(tmp_path / "e" / "model.gguf", b"tiny"), tmp_path)  # shorter than the window
    assert len({base, head, tail, longer, small}) == 5
    assert base.name.startswith("model-")


@pytest.mark.slow
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

    monkeypatch.setattr(protocol, "follow_child", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_model(str(broken), cache_dir=tmp_path / "cache", log=lambda _message: None)
    assert len(children) == 1 and children[0].returncode == -signal.SIGTERM  # stopped (still importing) and reaped
    assert list((tmp_path / "cache" / "converted").iterdir()) == []  # its temporary directory is gone


def test_child_failure_names_the_cause():
    assert protocol.child_failure(1, "a warning\nerror: ValueError: bad header\nmore noise\n") == "ValueError: bad header"
    assert "SIGKILL" in protocol.child_failure(-9, "") and "memory" in protocol.child_failure(-9, "")
    assert "signal 40" in protocol.child_failure(-40, "")  # real-time signals have no name
    assert protocol.child_failure(3, "") == "the converter exited with code 3"


def test_converter_reports_a_failure_as_one_line(tmp_path, capsys):
    broken = _write(tmp_path / "broken.gguf", b"GGUF\x03\x00\x00\x00truncated")
    assert protocol.child_main([str(broken), str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(protocol.ERROR_PREFIX) and captured.out == ""


def write_tiny_gguf(path, *, blocks: int, tied: bool = True, **options) -> None:
    hidden, heads, kv_heads, intermediate, _ = TINY_SHAPES["gqa"]
    write_random_gguf(path, layers=blocks, hidden=hidden, heads=heads, kv_heads=kv_heads, intermediate=intermediate,
                      vocab=64, tied=tied, **options)


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


@pytest.mark.slow
def test_gguf_model_loads_streamed_with_a_progress_bar(tmp_path, capsys):
    source = tmp_path / "tiny.gguf"
    write_tiny_gguf(source, blocks=2, extra_tensor="blk.0.unknown_thing.weight")
    loaded = load_model(str(source), cache_dir=tmp_path / "cache", stream=True, log=print)
    captured = capsys.readouterr()
    assert "converting tiny.gguf" in captured.err and "20/20" in captured.err  # the bar, at its end
    assert loaded.streamed and "peak RSS" in captured.out
    # a tensor the model has no place for is named, not dropped silently
    assert "note: GGUF tensors with no place in LlamaForCausalLM, not converted: blk.0.unknown_thing.weight" in captured.out
    assert not list((tmp_path / "cache" / "converted").glob(".tmp-*"))


@pytest.mark.slow
def test_orphaned_temporary_directories_are_removed(tmp_path):
    converted = tmp_path / "cache" / "converted"
    child = subprocess.Popen(["true"])
    child.wait()  # a pid that no longer runs
    orphan = converted / f"{gguf_cache.tmp_prefix()}{child.pid}-abc"
    alive = converted / f"{gguf_cache.tmp_prefix()}{os.getpid()}-def"  # a conversion still running (this process)
    elsewhere = converted / f".tmp-other-host-{child.pid}-ghi"  # another machine's, on a shared cache
    for path in (orphan, alive, elsewhere):
        (path / "sub").mkdir(parents=True)
    source = tmp_path / "tiny.gguf"
    write_tiny_gguf(source, blocks=1)
    load_model(str(source), cache_dir=tmp_path / "cache", log=lambda _message: None, progress=False)
    assert not orphan.exists() and alive.exists() and elsewhere.exists()


def test_conversion_needs_none_of_transformers_per_tensor_gguf_helpers(tmp_path, monkeypatch):
    """The tensor name map and the Q/K un-permute are the engine's own (gguf-py's name map), so a
    transformers without its legacy per-tensor GGUF helpers converts the same, a block at a time."""
    import transformers.modeling_gguf_pytorch_utils as helpers

    source = tmp_path / "tiny.gguf"
    write_tiny_gguf(source, blocks=2, tied=False)
    expected = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=source.name, dtype=torch.float32).state_dict()

    def gone(*_args, **_kwargs):
        raise AssertionError("a per-tensor helper of transformers was used")

    monkeypatch.setattr(helpers, "get_gguf_hf_weights_map", gone)
    monkeypatch.setattr(helpers, "TENSOR_PROCESSORS", {})
    monkeypatch.setattr(helpers.TensorProcessor, "process", gone)
    out = tmp_path / "out"
    out.mkdir()
    gguf_convert.convert_gguf(source, out)
    converted = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).state_dict()
    assert set(converted) == set(expected)
    for name, tensor in converted.items():
        assert torch.equal(tensor, expected[name]), name


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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

    monkeypatch.setattr(protocol.subprocess, "Popen", Recorded)
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
        by_rows = gguf_convert.dequantize_by_rows(data, kind, gguf.dequantize)
        whole = gguf.dequantize(data, kind)
        assert by_rows.dtype == np.float32 and by_rows.shape == whole.shape and np.array_equal(by_rows, whole)


@pytest.mark.parametrize("rope", [
    {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64},  # Llama 3.1's shape
    {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 32},  # Llama 3.2's
    {"factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 2.0, "original_max_position_embeddings": 100},
])
@pytest.mark.slow
def test_llama3_rope_scaling_is_derived_from_rope_freqs(tmp_path, capsys, rope):
    """A Llama 3.x GGUF carries its rope scaling only as the `rope_freqs` tensor (transformers' GGUF
    loading drops it, and the frequencies are wrong beyond the original context): the converted config
    gets llama3 rope parameters whose frequencies are those of the original model."""
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    source = tmp_path / "tiny.gguf"
    write_tiny_gguf(source, blocks=1, llama3_rope=rope)
    loaded = load_model(str(source), cache_dir=tmp_path / "cache", log=print, progress=False)
    assert "rope scaling from the GGUF's rope_freqs: llama3" in capsys.readouterr().out
    converted = loaded.model.config.rope_parameters
    assert converted["rope_type"] == "llama3" and converted["factor"] == rope["factor"]
    hidden, heads = loaded.model.config.hidden_size, loaded.model.config.num_attention_heads
    original = LlamaConfig(hidden_size=hidden, num_attention_heads=heads, max_position_embeddings=2048,
                           rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, **rope})
    expected, _ = ROPE_INIT_FUNCTIONS["llama3"](original, "cpu")
    assert torch.allclose(loaded.model.model.rotary_emb.inv_freq, expected, rtol=1e-5)
    head_dim = hidden // heads
    unscaled = 1.0 / 10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    assert not torch.allclose(expected, unscaled)  # the scaling changes some frequencies
    loaded.close()


@pytest.mark.slow
def test_rope_freqs_of_no_llama3_shape_is_refused(tmp_path):
    source = tmp_path / "tiny.gguf"
    write_tiny_gguf(source, blocks=1, extra_tensor="rope_freqs.weight")  # random factors
    with pytest.raises(UserError, match="rope_freqs tensor cannot be expressed as rope parameters"):
        load_model(str(source), cache_dir=tmp_path / "cache", log=lambda _message: None, progress=False)


@pytest.mark.parametrize("rope", [
    {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},   # Llama 3.1
    {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},  # Llama 3.2
])
def test_llama3_rope_parameters_of_real_llama_files_come_back_exactly(rope):
    from wanda_engine.testing import llama3_rope_factors

    factors = llama3_rope_factors(rope, 500000.0, 128)  # what llama.cpp writes for them
    assert gguf_convert.llama3_rope_parameters(factors, 500000.0, 128) == {"rope_type": "llama3", "rope_theta": 500000.0, **rope}
