"""Streaming from safetensors shards (the default) against --no_stream, resume, and failure safety."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from model_helpers import SAMPLE_TEXT, saved_weights, tiny_llama, tiny_run_config, tiny_tokenizer
from wanda_engine.api import PruneConfig, run_prune
from wanda_engine.errors import UserError
from wanda_engine.prune.schedules import SCHEDULES


@pytest.fixture(scope="module")
def sharded_model_dir(tmp_path_factory) -> str:
    """A tiny LLaMA saved as several safetensors shards (blocks spread over files)."""
    path = tmp_path_factory.mktemp("sharded")
    tiny_llama("gqa").save_pretrained(path, safe_serialization=True, max_shard_size="60KB")
    tiny_tokenizer().save_pretrained(path)
    assert (path / "model.safetensors.index.json").is_file()
    assert len(list(path.glob("*.safetensors"))) > 3
    return str(path)


@pytest.mark.parametrize("schedule", ["reference", "sequential"])
@pytest.mark.parametrize("sparsity_type", ["unstructured", "2:4"])
def test_streamed_equals_whole_model(sharded_model_dir, calibration_text_file, tmp_path, schedule, sparsity_type):
    reports = {}
    for mode, stream in (("streamed", True), ("whole", False)):
        reports[mode] = run_prune(
            tiny_run_config(sharded_model_dir, calibration_text_file, tmp_path, stream=stream, schedule=schedule,
                    sparsity_type=sparsity_type, save_model=str(tmp_path / mode)),
            log=lambda *_: None,
        )
    assert reports["streamed"].streamed and not reports["whole"].streamed
    # Block reads and writes are a stage of their own, as the whole model's load and save are.
    assert reports["streamed"].timings["block_io_s"] > 0 and "block_io_s" not in reports["whole"].timings
    streamed, whole = saved_weights(tmp_path / "streamed"), saved_weights(tmp_path / "whole")
    tied_or_absent = set(whole) - set(streamed)
    assert not set(streamed) - set(whole) and not tied_or_absent
    for name, tensor in whole.items():
        assert torch.equal(streamed[name], tensor), name
    assert reports["streamed"].per_layer == reports["whole"].per_layer
    assert reports["streamed"].ppl_dense == pytest.approx(reports["whole"].ppl_dense, rel=1e-4)
    assert reports["streamed"].ppl_pruned == pytest.approx(reports["whole"].ppl_pruned, rel=1e-4)


def test_streamed_output_is_sharded_with_source_names_and_loads(sharded_model_dir, calibration_text_file, tmp_path):
    out = tmp_path / "pruned"
    run_prune(tiny_run_config(sharded_model_dir, calibration_text_file, tmp_path, save_model=str(out)), log=lambda *_: None)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    source = json.loads((Path(sharded_model_dir) / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(source["weight_map"])
    assert len(set(index["weight_map"].values())) == 3 + 1  # one shard per block + the rest
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    zeros = sum(int((p == 0).sum()) for n, p in reloaded.named_parameters() if ".layers." in n and p.dim() == 2)
    total = sum(p.numel() for n, p in reloaded.named_parameters() if ".layers." in n and p.dim() == 2)
    assert zeros / total == pytest.approx(0.5, abs=1e-3)
    assert not list(tmp_path.glob(".pruned*")), "no partial or temp directory left behind"


def _fail_at_block(monkeypatch, block_index: int, error: type[BaseException]):
    schedule = SCHEDULES.get("reference")
    calls = {"n": 0}
    original = type(schedule).prune_block

    def failing(self, *args, **kwargs):
        if calls["n"] == block_index:
            raise error("injected failure")
        calls["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(schedule), "prune_block", failing)


def _interrupt_at_block(config: PruneConfig, monkeypatch, block_index: int) -> None:
    """Run `config` with a Ctrl-C injected when block `block_index` starts."""
    with monkeypatch.context() as patch:
        _fail_at_block(patch, block_index, KeyboardInterrupt)
        with pytest.raises(KeyboardInterrupt):
            run_prune(config, log=lambda *_: None)


def test_resume_after_failure_gives_the_same_model(sharded_model_dir, calibration_text_file, tmp_path, monkeypatch):
    reference_dir = tmp_path / "uninterrupted"
    expected = run_prune(tiny_run_config(sharded_model_dir, calibration_text_file, tmp_path, save_model=str(reference_dir)), log=lambda *_: None)

    out = tmp_path / "pruned"
    config = tiny_run_config(sharded_model_dir, calibration_text_file, tmp_path, save_model=str(out), checkpoint_every=0)
    _interrupt_at_block(config, monkeypatch, 2)
    assert not out.exists(), "an interrupted run must not leave the output directory"
    partial = tmp_path / ".pruned.partial"
    assert (partial / "resume" / "state.json").is_file()
    assert json.loads((partial / "resume" / "state.json").read_text())["next_block"] == 2

    config.resume = True
    resumed = run_prune(config, log=lambda *_: None)
    assert resumed.resumed_from_block == 2
    assert not partial.exists()
    expected_weights, resumed_weights = saved_weights(reference_dir), saved_weights(out)
    assert expected_weights.keys() == resumed_weights.keys()
    for name, tensor in expected_weights.items():
        assert torch.equal(resumed_weights[name], tensor), name
    assert resumed.per_layer == expected.per_layer
    assert resumed.actual_sparsity == expected.actual_sparsity
    assert resumed.ppl_pruned == pytest.approx(expected.ppl_pruned, rel=1e-6)
    assert resumed.ppl_dense == pytest.approx(expected.ppl_dense, rel=1e-6)


def test_failure_before_any_checkpoint_leaves_nothing(sharded_model_dir, calibration_text_file, tmp_path, monkeypatch):
    out = tmp_path / "pruned"
    _fail_at_block(monkeypatch, 1, RuntimeError)
    with pytest.raises(RuntimeError, match="injected"):
        run_prune(tiny_run_config(sharded_model_dir, calibration_text_file, tmp_path, save_model=str(out)), log=lambda *_: None)
    assert not [p.name for p in tmp_path.iterdir() if "pruned" in p.name]


def test_resume_refuses_other_settings(sharded_model_dir, calibration_text_file, tmp_path, monkeypatch):
    out = tmp_path / "pruned"
    config = tiny_run_config(sharded_model_dir, calibration_text_file, tmp_path, save_model=str(out), checkpoint_every=0)
    _interrupt_at_block(config, monkeypatch, 1)
    changed = tiny_run_config(sharded_model_dir, calibration_text_file, tmp_path, save_model=str(out), resume=True, sparsity_ratio=0.6)
    with pytest.raises(UserError, match="sparsity_ratio"):
        run_prune(changed, log=lambda *_: None)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"resume": True}, "--resume continues a streamed --save_model run"),
        ({"resume": True, "save_model": "X", "stream": False}, "drop --no_stream"),
        ({"checkpoint_every": -1}, "--checkpoint_every"),
        ({"checkpoint_every": float("nan")}, "--checkpoint_every nan"),
    ],
)
def test_bad_streaming_flags(sharded_model_dir, calibration_text_file, tmp_path, overrides, message):
    if overrides.get("save_model") == "X":
        overrides["save_model"] = str(tmp_path / "out")
    with pytest.raises(UserError, match=message):
        run_prune(tiny_run_config(sharded_model_dir, calibration_text_file, tmp_path, **overrides), log=lambda *_: None)
    assert not (tmp_path / "out").exists()


def test_resume_without_checkpoint_is_an_error(sharded_model_dir, calibration_text_file, tmp_path):
    config = tiny_run_config(sharded_model_dir, calibration_text_file, tmp_path, save_model=str(tmp_path / "out"), resume=True)
    with pytest.raises(UserError, match="there is no interrupted run to continue"):  # no run happened
        run_prune(config, log=lambda *_: None)
    (tmp_path / ".out.partial").mkdir()  # a run that stopped before its first checkpoint
    with pytest.raises(UserError, match="the run ended before its first checkpoint"):
        run_prune(config, log=lambda *_: None)
    assert (tmp_path / ".out.partial").is_dir() and not (tmp_path / "out").exists()


def test_streamed_blocks_reuse_one_blocks_memory(sharded_model_dir):
    """Each block is copied out of the file's copy-on-write map into the previous block's tensors
    (pruning writes in place), and holds exactly its own checkpoint values."""
    from transformers import AutoConfig

    from wanda_engine.models.streaming import SafetensorsCheckpoint, StreamedBlocks, empty_model, load_skeleton

    checkpoint = SafetensorsCheckpoint(Path(sharded_model_dir))
    structure = empty_model(AutoConfig.from_pretrained(sharded_model_dir), torch.float32, False)
    model = load_skeleton(structure, checkpoint, torch.float32, "cpu")
    store = StreamedBlocks(model, checkpoint, torch.float32, "cpu")
    name = "self_attn.q_proj.weight"
    first = store.load(0).get_parameter(name)
    pointer = first.data_ptr()
    store.release(0, store.blocks[0], pruned=False)
    second = store.load(1).get_parameter(name)
    assert second.data_ptr() == pointer
    expected = checkpoint.read([f"{store.prefix}1.{name}"], torch.float32, "cpu")[f"{store.prefix}1.{name}"]
    assert torch.equal(second, expected)
    assert store.blocks[0].get_parameter(name).device.type == "meta"


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("stream", [True, False])
def test_report_memory_counts_an_untied_lm_head_only(calibration_text_file, tmp_path, tied, stream):
    model = tiny_llama("gqa")
    if tied:
        model.config.tie_word_embeddings = True
        model.tie_weights()
    model.save_pretrained(tmp_path / "model", safe_serialization=True)
    tiny_tokenizer().save_pretrained(tmp_path / "model")
    report = run_prune(
        tiny_run_config(str(tmp_path / "model"), calibration_text_file, tmp_path, stream=stream, eval="none", prune_method="magnitude"),
        log=lambda *_: None,
    )
    head_mb = model.get_output_embeddings().weight.numel() * 4 / 2**20
    assert report.memory.lm_head_mb == (0.0 if tied else pytest.approx(head_mb))
    assert report.memory.embeddings_mb == pytest.approx(head_mb)  # same shape as the head here


@pytest.mark.parametrize("changed", ["calibration", "evaluation"])
def test_resume_refuses_a_changed_input_file_at_the_same_path(changed, sharded_model_dir, tmp_path, monkeypatch):
    """The fingerprint covers what the inputs hold, not only their paths: a calibration text edited in
    place (the report would describe the new text while the weights came from the old), or a longer
    evaluation file (more windows than the checkpoint holds), is refused."""
    calibration, evaluation = tmp_path / "calibration.txt", tmp_path / "evaluation.txt"
    calibration.write_text(SAMPLE_TEXT * 40)
    evaluation.write_text(SAMPLE_TEXT * 40)
    out = tmp_path / "pruned"
    config = tiny_run_config(sharded_model_dir, str(calibration), tmp_path, eval=str(evaluation), eval_limit=None,
                     save_model=str(out), checkpoint_every=0)
    _interrupt_at_block(config, monkeypatch, 2)
    if changed == "calibration":
        calibration.write_text((SAMPLE_TEXT * 40).replace("weights", "numbers"))
    else:
        evaluation.write_text(SAMPLE_TEXT * 80)
    config.resume = True
    logged = []
    with pytest.raises(UserError, match=f"other settings \\(content of the {changed} tokens\\)"):
        run_prune(config, log=logged.append)
    assert (tmp_path / ".pruned.partial" / "resume" / "state.json").is_file(), "the checkpoint must survive the refusal"
    assert not any("--resume to continue" in line for line in logged), "advice contradicting the refusal"


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncated" else b"\xff" * 16 + data[16:])


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("how", ["truncated", "header"])
def test_damaged_safetensors_file_is_named_before_any_work(how, stream, sharded_model_dir, calibration_text_file, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(sharded_model_dir, model)
    damaged = sorted(model.glob("*.safetensors"))[-1]
    _damage(damaged, how)
    logged = []
    with pytest.raises(UserError) as error:
        run_prune(tiny_run_config(str(model), calibration_text_file, tmp_path, stream=stream, save_model=str(tmp_path / "out")),
                  log=logged.append)
    assert str(damaged) in str(error.value) and "re-download or re-convert it" in str(error.value)
    assert "\n" not in str(error.value) and not any("perplexity" in line for line in logged)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_safetensors_file_damaged_mid_run_is_a_one_line_error_and_cleans_up(sharded_model_dir, calibration_text_file, tmp_path,
                                                                            monkeypatch):
    model = tmp_path / "model"
    shutil.copytree(sharded_model_dir, model)
    index = json.loads((model / "model.safetensors.index.json").read_text())["weight_map"]
    last_block = model / index["model.layers.2.mlp.down_proj.weight"]
    schedule = SCHEDULES.get("reference")
    original = type(schedule).prune_block

    damaged = []

    def damage_then_prune(self, *args, **kwargs):
        if not damaged:  # after the start-up check, before block 2 is read
            _damage(last_block, "truncated")
            damaged.append(last_block)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(schedule), "prune_block", damage_then_prune)
    with pytest.raises(UserError, match=f"model file '{last_block}' is damaged or truncated"):
        run_prune(tiny_run_config(str(model), calibration_text_file, tmp_path, save_model=str(tmp_path / "out")), log=lambda *_: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"], "partial output left behind"


@pytest.mark.parametrize("checkpoint_every", [300.0, 0.0])
def test_failure_after_the_block_loop_cleans_up_or_keeps_a_resumable_checkpoint(
    checkpoint_every, sharded_model_dir, calibration_text_file, tmp_path, monkeypatch
):
    """What used to bypass the clean-up (GPT-NeoX's streamed evaluation failed after pruning and left
    `.OUT.partial`): every exit path removes the partial output, or keeps a checkpoint and says so."""
    import wanda_engine.pipeline as pipeline

    def failing(*_args, **_kwargs):
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(pipeline, "perplexity_from_hidden", failing)
    logged = []
    with pytest.raises(RuntimeError, match="evaluation failed"):
        run_prune(tiny_run_config(sharded_model_dir, calibration_text_file, tmp_path, save_model=str(tmp_path / "out"),
                          checkpoint_every=checkpoint_every), log=logged.append)
    partial = tmp_path / ".out.partial"
    if checkpoint_every:
        assert not partial.exists()
    else:
        assert (partial / "resume" / "state.json").is_file()
        assert any("--resume to continue" in line for line in logged)
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.lock").exists()


def test_log_counts_the_weights_zeroed_over_every_block_weight_matrix(sharded_model_dir, calibration_text_file, tmp_path):
    logged = []
    report = run_prune(tiny_run_config(sharded_model_dir, calibration_text_file, tmp_path, save_model=str(tmp_path / "out")),
                       log=logged.append)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    matrices = [p for n, p in reloaded.named_parameters() if ".layers." in n and p.dim() >= 2]
    zeros, total = sum(int((p == 0).sum()) for p in matrices), sum(p.numel() for p in matrices)
    assert f"pruned {zeros:,} of the {total:,} weights" in "\n".join(logged)
    assert report.actual_sparsity == zeros / total


def test_save_and_save_model_inside_one_another_are_refused(sharded_model_dir, calibration_text_file, tmp_path):
    """Each output is replaced whole when it is written: the report written over a directory holding
    the model (or the other way round) would lose it while the run reported success."""
    for save, save_model in (("out", "out/model"), ("out/report", "out")):
        with pytest.raises(UserError, match="one is or contains the other"):
            run_prune(tiny_run_config(sharded_model_dir, calibration_text_file, tmp_path, save=str(tmp_path / save),
                              save_model=str(tmp_path / save_model)), log=lambda *_: None)
    assert not (tmp_path / "out").exists()


def test_streamed_perplexity_over_windows_longer_than_a_logits_chunk():
    """Windows of 1100 tokens are turned into logits 1024 tokens at a time; the result is the model's
    own perplexity."""
    from wanda_engine.eval import perplexity
    from wanda_engine.eval.perplexity import eval_windows, perplexity_from_hidden

    model = tiny_llama("gqa", max_positions=2048)
    ids = torch.randint(3, 291, (2 * 1100 + 7,), generator=torch.Generator().manual_seed(0))
    windows = eval_windows(ids, 1100)
    captured = []
    handle = model.model.layers[-1].register_forward_hook(lambda _m, _a, out: captured.append(out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        model(input_ids=windows, use_cache=False)
    handle.remove()
    expected, _ = perplexity(model, ids, 1100, progress=False)
    assert perplexity_from_hidden(model, [captured[0][:1], captured[0][1:]], windows) == pytest.approx(expected, rel=1e-5)
