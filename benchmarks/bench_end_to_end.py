"""pytest-benchmark: the engine's prune stage against the batch-1 re-statement of the reference and the
floor, side by side, on a small random LLaMA (in process, no files; seconds on 2 CPU cores).

    python -m pytest benchmarks/bench_end_to_end.py --benchmark-enable [--benchmark-columns=min,rounds]

One group per sparsity; pytest-benchmark prints each side's time and, in parentheses, its ratio to the
fastest side of the group (the floor, normally). One timed round each after one warm-up round
(pedantic; a fresh copy of the model is made outside the timing for every round), so the figures are
single measurements: compare ratios, not seconds (BENCH_E2E_ROUNDS=N for more rounds).
No test asserts a time. What is timed is what `timings.prune_s` covers in the engine: the block loop,
after the block-0 inputs have been captured.

    BENCH_E2E_BLOCKS, BENCH_E2E_HIDDEN, BENCH_E2E_NSAMPLES, BENCH_E2E_SEQLEN size the run
        (defaults: 4 blocks, hidden 256, 8 samples of 128 tokens)
    BENCH_THREADS=N  torch's intra-op threads (default: torch's)
"""

from __future__ import annotations

import copy
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.reference_wanda import reference_prune  # noqa: E402
from wanda_engine.models import decoder_blocks, linear_layers  # noqa: E402
from wanda_engine.prune.methods import METHODS  # noqa: E402
from wanda_engine.prune.batches import call_block, capture_block_inputs  # noqa: E402
from wanda_engine.prune.block_loop import prune_blocks  # noqa: E402
from wanda_engine.prune.schedules import SCHEDULES  # noqa: E402
from wanda_engine.prune.sparsity import parse_sparsity  # noqa: E402

if os.environ.get("BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["BENCH_THREADS"]))

BLOCKS = int(os.environ.get("BENCH_E2E_BLOCKS", 4))
HIDDEN = int(os.environ.get("BENCH_E2E_HIDDEN", 256))
NSAMPLES = int(os.environ.get("BENCH_E2E_NSAMPLES", 8))
SEQLEN = int(os.environ.get("BENCH_E2E_SEQLEN", 128))
ROUNDS = int(os.environ.get("BENCH_E2E_ROUNDS", 1))
BATCH_SIZE = 8
SPARSITIES = {"unstructured 0.5": ("unstructured", 0.5), "2:4": ("2:4", None)}
SIDES = ["floor", "engine_reference", "engine_sequential", "restatement"]


def _schedule_available(name: str) -> bool:
    try:
        SCHEDULES.get(name)
    except Exception:  # noqa: BLE001 — an unregistered schedule raises the engine's UserError
        return False
    return True


@pytest.fixture(scope="module")
def dense_model():
    from wanda_engine.testing import random_llama

    model = random_llama(
        layers=BLOCKS, hidden=HIDDEN, heads=max(HIDDEN // 64, 1), kv_heads=max(HIDDEN // 256, 1),
        intermediate=HIDDEN * 11 // 4 // 8 * 8, vocab=1024, max_positions=max(SEQLEN, 256), pad_token_id=None,
    )
    model.config.use_cache = False
    return model


@pytest.fixture(scope="module")
def input_ids(dense_model):
    generator = torch.Generator().manual_seed(0)
    return torch.randint(3, dense_model.config.vocab_size, (NSAMPLES, SEQLEN), generator=generator)


def _masks(model) -> list[torch.Tensor]:
    return [layer.weight.data == 0 for block in decoder_blocks(model) for layer in linear_layers(block).values()]


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("sparsity", list(SPARSITIES))
def test_prune_stage(benchmark, dense_model, input_ids, sparsity: str, side: str) -> None:
    target = parse_sparsity(*SPARSITIES[sparsity])
    if side == "engine_sequential" and not _schedule_available("sequential"):
        pytest.skip("--schedule sequential is not registered in this tree")
    benchmark.group = (
        f"prune stage, random LLaMA {BLOCKS} blocks hidden {HIDDEN}, {NSAMPLES}x{SEQLEN} tokens, {sparsity}"
    )
    benchmark.extra_info.update(side=side, blocks=BLOCKS, hidden=HIDDEN, threads=torch.get_num_threads())
    attention_mask = torch.ones_like(input_ids)

    def setup():
        model = copy.deepcopy(dense_model)
        batches = None
        if side != "restatement":  # capture is outside the prune stage for the engine and the floor
            batches = capture_block_inputs(model, input_ids, attention_mask, BATCH_SIZE, torch.device("cpu"))
        return (model, batches), {}

    @torch.no_grad()
    def run(model, batches):
        if side == "floor":
            for block in decoder_blocks(model):
                for batch in batches:
                    batch.hidden = call_block(block, batch)
        elif side == "restatement":
            reference_prune(model, input_ids, target.ratio, target.n, target.m)
        else:
            schedule = SCHEDULES.get(side.removeprefix("engine_"))
            targets = [target] * len(decoder_blocks(model))
            prune_blocks(model, batches, METHODS.get("wanda"), targets, schedule=schedule, progress=False)
        return model

    model = benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    if side != "floor":  # the side did prune: every pruned linear at the target sparsity
        masks = _masks(model)
        achieved = sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)
        assert abs(achieved - target.ratio) < 0.01
