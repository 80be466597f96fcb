"""`--schedule sequential`: each linear's statistic comes from inputs produced by the already-pruned
linears upstream of it; masks, sparsity, padding, block outputs, refusals and the CLI flag."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers.activations import ACT2FN
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaMLP, LlamaRMSNorm

import cli
import kernels
from wanda_engine.errors import UserError
from wanda_engine.models import decoder_blocks, linear_layers
from wanda_engine.prune.methods import METHODS
from wanda_engine.prune.batches import BlockBatch, call_block, capture_block_inputs, copy_batches, first_sample
from wanda_engine.prune.block_loop import prune_blocks
from wanda_engine.prune.schedules import SCHEDULES
from wanda_engine.prune.schedules.sequential import _SplitBlock
from wanda_engine.prune.sparsity import SparsityTarget, parse_sparsity

from model_helpers import padded_calibration, text_perplexity, tiny_llama

SEQUENTIAL = SCHEDULES.get("sequential")
WANDA = METHODS.get("wanda")

# Which linears feed each statistic-owning linear, in block order: a statistic of the sequential
# schedule is taken with all linears of the earlier groups already pruned.
GROUPS = [
    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    ("self_attn.o_proj",),
    ("mlp.gate_proj", "mlp.up_proj"),
    ("mlp.down_proj",),
]


def padded_batches(model, batch_size: int = 2, seed: int = 0) -> list[BlockBatch]:
    """Block-0 inputs for 5 samples of varying length (right padding), so token masks are exercised."""
    gen = torch.Generator().manual_seed(seed)
    lengths = [12, 7, 12, 9, 5]
    input_ids = torch.randint(3, 291, (len(lengths), 12), generator=gen)
    attention_mask = torch.zeros_like(input_ids)
    for row, length in enumerate(lengths):
        attention_mask[row, :length] = 1
    return capture_block_inputs(model, input_ids, attention_mask, batch_size, torch.device("cpu"))


class RecordingWanda:
    """Wanda, remembering the statistic each weight was pruned with (keyed by the weight's storage address)."""

    needs_statistics = True

    def __init__(self) -> None:
        self.statistics: dict[int, torch.Tensor] = {}

    def prune_(self, weight, sq_norms, target):
        self.statistics[weight.data_ptr()] = sq_norms.clone()
        return WANDA.prune_(weight, sq_norms, target)


def masks_of(model) -> dict[str, torch.Tensor]:
    return {
        f"{i}.{name}": layer.weight.data == 0
        for i, block in enumerate(decoder_blocks(model))
        for name, layer in linear_layers(block).items()
    }


def prune_model(model, batches, target: SparsityTarget, method=WANDA):
    return prune_blocks(model, batches, method, [target] * len(decoder_blocks(model)), schedule=SEQUENTIAL, progress=False)


# ---------------------------------------------------------------------------------------------------
# 1. Statement level: which inputs each statistic is taken from
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["gqa", "odd"])
def test_qkv_masks_equal_reference_schedule(shape):
    model = tiny_llama(shape)
    batches = padded_batches(model)
    reference_block = copy.deepcopy(decoder_blocks(model)[0])
    reference = SCHEDULES.get("reference").prune_block(reference_block, copy_batches(batches), WANDA, SparsityTarget(0.5))
    sequential = SEQUENTIAL.prune_block(decoder_blocks(model)[0], batches, WANDA, SparsityTarget(0.5))
    assert list(sequential) == list(reference) == list(linear_layers(reference_block))
    for name in GROUPS[0]:
        assert torch.equal(sequential[name], reference[name]), name


@pytest.mark.parametrize("shape", ["gqa", "odd"])
def test_each_statistic_comes_from_upstream_pruned_linears(shape):
    """o_proj's statistic is Σx²/samples of the attention output computed with the pruned q/k/v (and likewise
    gate/up after o_proj, down after gate/up), recomputed here with hooks on a copy of the dense block
    that gets the sequential masks applied group by group, padding excluded."""
    model = tiny_llama(shape)
    batches = padded_batches(model)
    block = decoder_blocks(model)[0]
    dense_block = copy.deepcopy(block)
    inputs = copy_batches(batches)
    recorder = RecordingWanda()
    masks = SEQUENTIAL.prune_block(block, batches, recorder, SparsityTarget(0.5))
    pruned_linears, dense_linears = linear_layers(block), linear_layers(dense_block)

    for group in GROUPS:
        owner = dense_linears[group[0]]
        expected = torch.zeros(owner.in_features, dtype=torch.float64)
        for batch in inputs:

            def accumulate(_module, args, token_mask=batch.token_mask) -> None:  # None: the input is left as is
                expected.add_(kernels.sq_norms_reference(args[0], token_mask))

            hook = owner.register_forward_pre_hook(accumulate)
            try:
                with torch.no_grad():
                    call_block(dense_block, batch)
            finally:
                hook.remove()
        expected /= sum(batch.hidden.shape[0] for batch in inputs)  # the reference's mean over samples
        for name in group:
            got = recorder.statistics[pruned_linears[name].weight.data_ptr()]
            assert got.dtype == torch.float32
            torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6, msg=name)
        with torch.no_grad():  # what the next group's statistic is taken after
            for name in group:
                dense_linears[name].weight.data[masks[name]] = 0


# ---------------------------------------------------------------------------------------------------
# 2. End to end through prune_blocks
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["gqa", "odd"])
def test_unstructured_sparsity_exact_per_row(shape):
    model = tiny_llama(shape)
    outcome = prune_model(model, padded_batches(model), SparsityTarget(0.5))
    for name, mask in masks_of(model).items():
        assert (mask.sum(dim=1) == int(mask.shape[1] * 0.5)).all(), name
    assert outcome.actual_sparsity == pytest.approx(0.5, abs=1e-3)
    assert set(outcome.per_layer) == {f"model.layers.{name}" for name in masks_of(model)}


@pytest.mark.parametrize("shape", ["gqa", "odd"])
def test_two_of_four_every_group_has_two_zeros(shape):
    model = tiny_llama(shape)
    prune_model(model, padded_batches(model), parse_sparsity("2:4", None))
    for name, mask in masks_of(model).items():
        groups = mask.reshape(mask.shape[0], -1, 4)
        assert (groups.sum(dim=-1) == 2).all(), name


def test_wanda_variant_reaches_target():
    model = tiny_llama("gqa")
    outcome = prune_model(model, padded_batches(model), SparsityTarget(0.5), method=METHODS.get("wanda").variant())
    for name, value in outcome.per_layer.items():
        assert value == pytest.approx(0.5, abs=0.02), name


def test_deterministic():
    first, second = tiny_llama("gqa"), tiny_llama("gqa")
    prune_model(first, padded_batches(first), SparsityTarget(0.5))
    prune_model(second, padded_batches(second), SparsityTarget(0.5))
    for (name, a), b in zip(masks_of(first).items(), masks_of(second).values()):
        assert torch.equal(a, b), name


def test_padding_excluded_from_statistics():
    """Right-padding a batch with extra garbage tokens must not change any statistic or mask."""
    model_short, model_long = tiny_llama("gqa"), tiny_llama("gqa")
    ids_short, mask_short, ids_long, mask_long = padded_calibration()
    cpu = torch.device("cpu")
    prune_model(model_short, capture_block_inputs(model_short, ids_short, mask_short, 3, cpu), SparsityTarget(0.5))
    prune_model(model_long, capture_block_inputs(model_long, ids_long, mask_long, 3, cpu), SparsityTarget(0.5))
    for (name, a), b in zip(masks_of(model_short).items(), masks_of(model_long).values()):
        assert torch.equal(a, b), name


def test_hidden_states_advance_through_the_pruned_blocks():
    """After each block, batch.hidden is what the *pruned* block outputs for that block's input."""
    model = tiny_llama("gqa")
    batches = padded_batches(model)
    inputs = copy_batches(batches)
    prune_model(model, batches, SparsityTarget(0.5))
    for block in decoder_blocks(model):
        for batch in inputs:
            batch.hidden = call_block(block, batch)
    for got, expected in zip(batches, inputs):
        # The split runs the block's own operations in the block's order (in place where it can), so
        # the outputs are the forward's bit for bit, not merely close.
        assert torch.equal(got.hidden, expected.hidden)


@pytest.mark.parametrize("activation", ["silu", "gelu_pytorch_tanh"])
@pytest.mark.parametrize("shape", [(3, 5), (2, 1300)], ids=["one-chunk", "three-chunks"])
def test_mlp_intermediate_is_the_modules_bit_for_bit(activation, shape):
    """The in-place act(gate)·up (in place for SiLU, out of place for other activations; up_proj in
    chunks of 1024 tokens) is what LlamaMLP computes in front of down_proj, exactly."""
    block = decoder_blocks(tiny_llama("gqa"))[0]
    block.mlp.act_fn = ACT2FN[activation]
    x = torch.randn(*shape, block.hidden_size, generator=torch.Generator().manual_seed(0))
    expected = block.mlp.act_fn(block.mlp.gate_proj(x)) * block.mlp.up_proj(x)
    assert torch.equal(_SplitBlock(block)._in_place_intermediate(x), expected)


def test_in_place_mlp_used_once_verified():
    model = tiny_llama("gqa")
    split = _SplitBlock(decoder_blocks(model)[0])
    split.verify(padded_batches(model)[0])
    assert split.in_place_mlp


class GeluMlpWithoutActFn(torch.nn.Module):
    """An MLP with LLaMA's linears but no `act_fn` attribute: its own forward must be used."""

    def __init__(self, mlp) -> None:
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = mlp.gate_proj, mlp.up_proj, mlp.down_proj

    def forward(self, x):
        return self.down_proj(torch.nn.functional.gelu(self.gate_proj(x)) * self.up_proj(x))


def test_mlp_without_act_fn_runs_its_own_forward():
    model = tiny_llama("gqa")
    block = decoder_blocks(model)[0]
    block.mlp = GeluMlpWithoutActFn(block.mlp)
    x = torch.randn(3, 5, block.hidden_size, generator=torch.Generator().manual_seed(0))
    expected = torch.nn.functional.gelu(block.mlp.gate_proj(x)) * block.mlp.up_proj(x)
    assert torch.equal(_SplitBlock(block).mlp_intermediate(x), expected)
    masks = SEQUENTIAL.prune_block(block, padded_batches(model), WANDA, SparsityTarget(0.5))
    assert isinstance(block.mlp.down_proj, torch.nn.Linear)  # swapped back
    assert all(mask.float().mean() == 0.5 for mask in masks.values())


def test_block_modules_restored():
    model = tiny_llama("gqa")
    block = decoder_blocks(model)[0]
    before = linear_layers(block)
    SEQUENTIAL.prune_block(block, padded_batches(model), WANDA, SparsityTarget(0.5))
    after = linear_layers(block)
    assert list(after) == list(before)
    assert all(after[name] is before[name] for name in before)  # o_proj and down_proj swapped back


# ---------------------------------------------------------------------------------------------------
# 3. Blocks the split does not fit are refused, untouched
# ---------------------------------------------------------------------------------------------------


class UpActivatedMlp(LlamaMLP):
    """LLaMA's MLP with the activation on up_proj's output instead of gate_proj's."""

    def forward(self, x):
        return self.down_proj(self.gate_proj(x) * self.act_fn(self.up_proj(x)))


class ScaledResidualLayer(LlamaDecoderLayer):
    """Same submodules as LLaMA, different wiring: only the forward check can tell."""

    def forward(self, hidden_states, **kwargs):
        return 0.5 * super().forward(hidden_states, **kwargs)


def test_extra_norm_refused():
    model = tiny_llama("gqa")
    block = decoder_blocks(model)[0]
    block.pre_feedforward_layernorm = LlamaRMSNorm(block.hidden_size)  # Gemma-style extra norm
    dense = {name: layer.weight.clone() for name, layer in linear_layers(block).items()}
    with pytest.raises(UserError, match=r"LlamaDecoderLayer.*--schedule reference") as error:
        SEQUENTIAL.prune_block(block, padded_batches(model), WANDA, SparsityTarget(0.5))
    assert "\n" not in str(error.value)
    assert all(torch.equal(layer.weight, dense[name]) for name, layer in linear_layers(block).items())


def test_different_wiring_refused_by_forward_check():
    model = tiny_llama("gqa")
    block = decoder_blocks(model)[0]
    block.__class__ = ScaledResidualLayer
    dense = {name: layer.weight.clone() for name, layer in linear_layers(block).items()}
    with pytest.raises(UserError, match=r"ScaledResidualLayer.*--schedule reference"):
        SEQUENTIAL.prune_block(block, padded_batches(model), WANDA, SparsityTarget(0.5))
    assert isinstance(block.self_attn.o_proj, torch.nn.Linear) and isinstance(block.mlp.down_proj, torch.nn.Linear)
    assert all(torch.equal(layer.weight, dense[name]) for name, layer in linear_layers(block).items())


class FreshLayer(LlamaDecoderLayer):
    """A structure no earlier test has verified (verification is cached per structure)."""


class OneSampleFailsLayer(LlamaDecoderLayer):
    """A block whose forward fails on one sample, as if cutting some kwarg to one sample broke it."""

    def forward(self, hidden_states, **kwargs):
        if hidden_states.shape[0] == 1:
            raise RuntimeError("this block needs the whole batch")
        return super().forward(hidden_states, **kwargs)


@pytest.mark.parametrize("layer_class, verified_on", [(FreshLayer, 1), (OneSampleFailsLayer, 2)])
def test_split_verified_on_one_sample_else_on_the_batch(layer_class, verified_on):
    model = tiny_llama("gqa")
    block = decoder_blocks(model)[0]
    block.__class__ = layer_class
    batches = padded_batches(model)
    assert batches[0].token_mask is not None and batches[0].hidden.shape[0] == 2
    sizes = []
    block.register_forward_pre_hook(lambda _m, args, kwargs: sizes.append((args[0] if args else kwargs["hidden_states"]).shape[0]), with_kwargs=True)
    masks = SEQUENTIAL.prune_block(block, copy_batches(batches), WANDA, SparsityTarget(0.5))
    assert sizes[-1] == verified_on  # the block's own forward ran once, in the last verification
    assert all(mask.float().mean() == 0.5 for mask in masks.values())


def test_first_sample_cuts_every_per_sample_kwarg():
    batch = BlockBatch(
        torch.zeros(3, 4, 8), {"position_embeddings": (torch.zeros(3, 4, 2), torch.zeros(1, 4, 2)), "mask": torch.zeros(3, 1, 4, 4), "flag": True},
        torch.ones(3, 4, dtype=torch.bool),
    )
    sample = first_sample(batch)
    assert sample.hidden.shape == (1, 4, 8) and sample.token_mask.shape == (1, 4)
    assert [t.shape[0] for t in sample.kwargs["position_embeddings"]] == [1, 1]
    assert sample.kwargs["mask"].shape == (1, 1, 4, 4) and sample.kwargs["flag"] is True
    assert first_sample(BlockBatch(torch.zeros(1, 4, 8), {}, None)) is None


def test_other_mlp_wiring_with_act_fn_runs_its_own_forward():
    """An MLP with `act_fn` whose forward is not act(gate)·up: the in-place form differs, so the
    module's own forward is used, and the block outputs are still the pruned block's exactly."""
    model = tiny_llama("gqa")
    block = decoder_blocks(model)[0]
    block.mlp.__class__ = UpActivatedMlp
    batches = padded_batches(model)
    split = _SplitBlock(block)
    split.verify(batches[0])
    assert not split.in_place_mlp
    inputs = copy_batches(batches)
    SEQUENTIAL.prune_block(block, batches, WANDA, SparsityTarget(0.5))
    for got, batch in zip(batches, inputs):
        assert torch.equal(got.hidden, call_block(block, batch))


# ---------------------------------------------------------------------------------------------------
# 4. The CLI flag
# ---------------------------------------------------------------------------------------------------


def test_cli_accepts_schedule_sequential(tiny_model_dir, calibration_text_file, tmp_path, capsys):
    save = tmp_path / "report"
    argv = [
        "prune", "--model", tiny_model_dir, "--calibration_dataset", calibration_text_file, "--eval", calibration_text_file,
        "--nsamples", "4", "--seqlen", "32", "--batch_size", "2", "--eval_limit", "3", "--no_progress",
        "--cache_dir", str(tmp_path / "cache"), "--schedule", "sequential", "--save", str(save),
        "--save_model", str(tmp_path / "pruned"),
    ]
    code = cli.main(argv)
    assert code == 0, capsys.readouterr().err
    report = json.loads((save / "report.json").read_text())
    assert report["schedule"] == "sequential"
    assert report["actual_sparsity"] == pytest.approx(0.5, abs=1e-3)
    # the reported perplexities are those of the models on disk: the given one, and the one it saved
    assert report["ppl_dense"] == pytest.approx(text_perplexity(tiny_model_dir, calibration_text_file, 32, 3), rel=1e-5)
    assert report["ppl_pruned"] == pytest.approx(text_perplexity(tmp_path / "pruned", calibration_text_file, 32, 3), rel=1e-5)
    assert report["ppl_pruned"] != pytest.approx(report["ppl_dense"], rel=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: hidden states in host memory, block on the GPU")
def test_hidden_states_in_host_memory_give_the_same_masks_and_outputs():
    """Hidden states kept in (pinned) host memory, as when they do not fit on the GPU: norm outputs are
    recomputed instead of kept, residuals go through the host; masks and outputs must not change."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    results = []
    for storage in (cuda, cpu):
        model = tiny_llama("gqa").to(cuda)
        ids, mask = padded_calibration()[:2]
        batches = capture_block_inputs(model, ids, mask, 3, cuda, storage=storage)
        prune_model(model, batches, SparsityTarget(0.5))
        results.append((masks_of(model), [batch.hidden.to(cpu) for batch in batches]))
    (masks_on_device, hidden_on_device), (masks_on_host, hidden_on_host) = results
    for name, mask in masks_on_device.items():
        assert torch.equal(mask, masks_on_host[name]), name
    for on_device, on_host in zip(hidden_on_device, hidden_on_host):
        assert torch.equal(on_device, on_host)


def test_cli_notes_the_sequential_n_m_trade_off(tiny_model_dir, calibration_text_file, tmp_path, capsys):
    argv = [
        "prune", "--model", tiny_model_dir, "--calibration_dataset", calibration_text_file, "--eval", "none",
        "--nsamples", "2", "--seqlen", "16", "--batch_size", "2", "--no_progress", "--sparsity_type", "2:4",
        "--cache_dir", str(tmp_path / "cache"), "--schedule", "sequential",
    ]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert "docs/schedules.md" in capsys.readouterr().out
    assert cli.main([*argv[:-1], "reference"]) == 0
    assert "docs/schedules.md" not in capsys.readouterr().out
