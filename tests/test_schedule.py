"""The batched block schedule gives the same masks as the batch-1 re-statement of the reference."""

from __future__ import annotations

import copy

import pytest
import torch

from benchmarks.reference_wanda import reference_prune
from wanda_engine.api import PruneConfig, run_prune
from wanda_engine.errors import UserError
from wanda_engine.models import decoder_blocks, linear_layers
from wanda_engine.prune.methods import METHODS
from wanda_engine.prune.batches import call_block, capture_block_inputs
from wanda_engine.prune.block_loop import prune_blocks
from wanda_engine.prune.schedules import schedule_for
from wanda_engine.prune.statistics import StatisticsPass, last_linear_called
from wanda_engine.prune.sparsity import SparsityTarget, parse_sparsity

from model_helpers import padded_calibration, tiny_llama, tiny_tokenizer


def engine_prune(model, input_ids, target: SparsityTarget, attention_mask=None, batch_size=3, method="wanda"):
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    batches = capture_block_inputs(model, input_ids, attention_mask, batch_size, torch.device("cpu"))
    n_blocks = len(decoder_blocks(model))
    pruning = METHODS.get("wanda").variant() if method == "wanda_variant" else METHODS.get(method)
    return prune_blocks(model, batches, pruning, [target] * n_blocks, schedule=schedule_for(pruning, "reference"), progress=False)


def masks_of(model) -> dict[str, torch.Tensor]:
    return {
        f"{i}.{name}": layer.weight.data == 0
        for i, block in enumerate(decoder_blocks(model))
        for name, layer in linear_layers(block).items()
    }


@pytest.mark.parametrize("sparsity_type", ["unstructured", "2:4", "1:4"])
def test_masks_identical_to_reference_restatement(tiny_model, sparsity_type):
    target = parse_sparsity(sparsity_type, None)
    input_ids = torch.randint(3, 291, (7, 24), generator=torch.Generator().manual_seed(1))
    reference_model = copy.deepcopy(tiny_model)
    expected = reference_prune(reference_model, input_ids, target.ratio, target.n, target.m)
    outcome = engine_prune(tiny_model, input_ids, target)
    got = masks_of(tiny_model)
    assert set(got) == set(expected)
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    assert outcome.actual_sparsity == pytest.approx(target.ratio, abs=0.01)


def test_unstructured_sparsity_exact_per_row():
    model = tiny_llama("odd")
    input_ids = torch.randint(3, 291, (4, 16), generator=torch.Generator().manual_seed(2))
    outcome = engine_prune(model, input_ids, SparsityTarget(0.6))
    for name, layer in masks_of(model).items():
        assert (layer.sum(dim=1) == int(layer.shape[1] * 0.6)).all(), name
    assert set(outcome.per_layer) == {f"model.layers.{n}" for n in masks_of(model)}


def test_shared_inputs_share_one_statistic():
    model = tiny_llama("gqa")
    block = decoder_blocks(model)[0]
    batches = capture_block_inputs(model, torch.randint(3, 291, (2, 8)), torch.ones(2, 8, dtype=torch.long), 2, torch.device("cpu"))
    with StatisticsPass(linear_layers(block)) as stats:
        stats.start_batch(None)
        block(batches[0].hidden, use_cache=False, **batches[0].kwargs)
    owners = set(stats.group_of.values())
    assert len(owners) == 4  # q/k/v share, gate/up share, o and down have their own
    assert stats.group_of["self_attn.k_proj"] == stats.group_of["self_attn.v_proj"] == "self_attn.q_proj"
    assert stats.group_of["mlp.up_proj"] == "mlp.gate_proj"


def test_padding_excluded_from_statistics():
    """Right-padding a batch with extra garbage tokens must not change any statistic or mask."""
    model_a, model_b = tiny_llama("gqa"), tiny_llama("gqa")
    ids_short, mask_short, ids_long, mask_long = padded_calibration()
    engine_prune(model_a, ids_short, SparsityTarget(0.5), mask_short)
    engine_prune(model_b, ids_long, SparsityTarget(0.5), mask_long)
    for (name, a), b in zip(masks_of(model_a).items(), masks_of(model_b).values()):
        assert torch.equal(a, b), name


def test_same_seed_same_masks():
    input_ids = torch.randint(3, 291, (5, 16), generator=torch.Generator().manual_seed(4))
    first, second = tiny_llama("gqa"), tiny_llama("gqa")
    engine_prune(first, input_ids, SparsityTarget(0.5))
    engine_prune(second, input_ids, SparsityTarget(0.5))
    assert all(torch.equal(a, b) for a, b in zip(masks_of(first).values(), masks_of(second).values()))


def test_magnitude_needs_no_calibration():
    model = tiny_llama("gqa")
    magnitude = METHODS.get("magnitude")
    outcome = prune_blocks(model, [], magnitude, [SparsityTarget(0.5)] * 3, schedule=schedule_for(magnitude, "reference"),
                           progress=False)
    assert outcome.actual_sparsity == pytest.approx(0.5, abs=1e-3)


def test_wanda_variant_reaches_target():
    model = tiny_llama("gqa")
    input_ids = torch.randint(3, 291, (4, 16), generator=torch.Generator().manual_seed(5))
    outcome = engine_prune(model, input_ids, SparsityTarget(0.5), method="wanda_variant")
    for name, value in outcome.per_layer.items():
        assert value == pytest.approx(0.5, abs=0.02), name


def _statistics(block, batches, **options) -> StatisticsPass:
    with StatisticsPass(linear_layers(block), **options) as stats:
        for batch in batches:
            stats.start_batch(batch.token_mask)
            block(batch.hidden, use_cache=False, **batch.kwargs)
    return stats


def test_discarded_output_skips_the_last_linear_with_the_same_statistics():
    model = tiny_llama("gqa")
    block = decoder_blocks(model)[0]
    batches = capture_block_inputs(model, torch.randint(3, 291, (6, 8)), torch.ones(6, 8, dtype=torch.long), 2, torch.device("cpu"))
    full = _statistics(block, batches)
    skipping = _statistics(block, batches, output_discarded=True)
    assert full.skipped_tail is None
    assert skipping.skipped_tail == "mlp.down_proj"
    for name in linear_layers(block):
        assert torch.equal(full.statistic(name), skipping.statistic(name)), name


def test_a_known_tail_is_skipped_from_the_first_batch_with_the_same_statistics():
    """A data-parallel rank other than 0 knows the last linear before its first batch (its first batch
    is not the run's first): its GEMM is skipped from that batch on; the statistics do not change."""
    model = tiny_llama("gqa")
    block = decoder_blocks(model)[0]
    batches = capture_block_inputs(model, torch.randint(3, 291, (4, 8)), torch.ones(4, 8, dtype=torch.long), 2, torch.device("cpu"))
    tail = last_linear_called(block, linear_layers(block), batches[0])
    assert tail == "mlp.down_proj"
    outputs = []
    handle = linear_layers(block)[tail].register_forward_hook(lambda _module, _args, out: outputs.append(out))
    try:
        skipping = _statistics(block, batches, output_discarded=True, known_tail=tail)
    finally:
        handle.remove()
    assert len(outputs) == 2 and all(not out.any() for out in outputs)  # zeros stand in from the first batch
    full = _statistics(block, batches)
    for name in linear_layers(block):
        assert torch.equal(full.statistic(name), skipping.statistic(name)), name


def test_discarded_output_refuses_a_linear_called_after_the_skipped_one():
    class TwoLinears(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
            self.calls = 0

        def forward(self, x):  # the order of its linears changes from call to call
            self.calls += 1
            first, second = (self.a, self.b) if self.calls == 1 else (self.b, self.a)
            return second(first(x))

    module = TwoLinears()
    with StatisticsPass({"a": module.a, "b": module.b}, output_discarded=True) as stats:
        stats.start_batch(None)
        module(torch.randn(1, 3, 4))
        stats.start_batch(None)
        with pytest.raises(RuntimeError, match="a ran after b"):
            module(torch.randn(1, 3, 4))


def test_bad_values_reaching_a_kernel_are_the_users_error():
    """Non-finite weights (e.g. an fp16 overflow in the checkpoint) stop the run with a one-line error
    naming the block, not a traceback from inside the kernels."""
    model = tiny_llama("gqa")
    linear_layers(decoder_blocks(model)[1])["mlp.up_proj"].weight.data[0, 0] = float("nan")
    with pytest.raises(UserError, match=r"block 1 .*NaN"):
        engine_prune(model, torch.randint(3, 291, (2, 8)), SparsityTarget(0.5))


def _tiny_qwen2_with_sliding_layers(window: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, use_sliding_window=True, max_window_layers=2, sliding_window=window,
        max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).eval()


@pytest.mark.parametrize("seqlen, replay_is_exact", [(16, True), (32, False)])
def test_first_blocks_kwargs_replay_mixed_attention_only_within_the_window(seqlen, replay_is_exact):
    # Why run_prune refuses --seqlen > sliding_window for such models: block 2 (sliding) gets block 0's
    # full-attention mask when it is replayed.
    model = _tiny_qwen2_with_sliding_layers(window=16)
    assert model.config.layer_types == ["full_attention"] * 2 + ["sliding_attention"] * 2
    ids = torch.randint(3, 320, (2, seqlen), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(ids, output_hidden_states=True).hidden_states[3]  # input of block 3
        batch = capture_block_inputs(model, ids, torch.ones_like(ids), 2, torch.device("cpu"))[0]
        for block in model.model.layers[:3]:
            batch.hidden = call_block(block, batch)
    gap = float((batch.hidden - expected).abs().max())
    assert gap < 1e-5 if replay_is_exact else gap > 1e-3


def test_mixed_attention_model_refused_beyond_its_sliding_window(tmp_path, calibration_text_file):
    model_dir = tmp_path / "qwen2"
    _tiny_qwen2_with_sliding_layers(window=16).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    base = dict(model=str(model_dir), sparsity_ratio=0.5, calibration_dataset=calibration_text_file, nsamples=2,
                batch_size=2, eval="none", progress=False)
    with pytest.raises(UserError, match=r"--seqlen 32: .* 16-token sliding window.*use --seqlen 16 or less"):
        run_prune(PruneConfig(seqlen=32, save=str(tmp_path / "refused"), **base), log=lambda *_: None)
    assert not (tmp_path / "refused").exists()
    report = run_prune(PruneConfig(seqlen=16, **base), log=lambda *_: None)
    assert report.actual_sparsity == pytest.approx(0.5, abs=0.01)
    # Magnitude without evaluation runs no block on captured kwargs: nothing to refuse at any length.
    report = run_prune(PruneConfig(seqlen=32, prune_method="magnitude", **base), log=lambda *_: None)
    assert report.actual_sparsity == pytest.approx(0.5, abs=0.01)
    # Streamed evaluation does replay them.
    evaluated = base | {"eval": calibration_text_file}
    with pytest.raises(UserError, match=r"--seqlen 32: .* 16-token sliding window"):
        run_prune(PruneConfig(seqlen=32, prune_method="magnitude", **evaluated), log=lambda *_: None)


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "no_stream"])
@pytest.mark.parametrize("setting, needle", [
    (dict(seqlen=32), "16-token sliding window"),  # mixed attention beyond the window
    (dict(seqlen=16, sparsity_type="3:7", sparsity_ratio=None), "not a multiple of 7"),  # N:M that does not fit
])
def test_model_refused_before_its_weights_are_read(setting, needle, stream, tmp_path, calibration_text_file, monkeypatch):
    import transformers

    from wanda_engine.models import streaming

    model_dir = tmp_path / "qwen2"
    _tiny_qwen2_with_sliding_layers(window=16).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)

    def weights_read(*_args, **_kwargs):
        raise AssertionError("weights were read before the model was refused")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", weights_read)
    monkeypatch.setattr(streaming.StreamedBlocks, "load", weights_read)  # block reads; the skeleton is allowed
    settings = dict(sparsity_ratio=0.5, nsamples=2, batch_size=2, eval="none", progress=False) | setting
    with pytest.raises(UserError, match=needle):
        run_prune(PruneConfig(model=str(model_dir), calibration_dataset=calibration_text_file, stream=stream, **settings),
                  log=lambda *_: None)


def test_models_whose_blocks_need_other_kwargs_refused():
    from transformers import Gemma3Config, Gemma3TextConfig, LlamaConfig

    from wanda_engine.models.architecture import check_blocks_share_kwargs as _check_blocks_share_kwargs

    gemma3 = Gemma3TextConfig(num_hidden_layers=6)  # sliding and full layers, one rotary embedding per layer type
    for config in (gemma3, Gemma3Config()):  # the multimodal config keeps it in text_config
        with pytest.raises(UserError, match="different rotary embeddings"):
            _check_blocks_share_kwargs(config, 16)
    no_window = LlamaConfig(num_hidden_layers=2)
    no_window.layer_types = ["full_attention", "chunked_attention"]
    with pytest.raises(UserError, match="chunked_attention and full_attention layers"):
        _check_blocks_share_kwargs(no_window, 16)
    _check_blocks_share_kwargs(LlamaConfig(num_hidden_layers=2), 4096)  # one kind of layer: nothing to refuse
