"""Per-block statistics of the *dense* model, for the sparsity-allocation policies.

One extra block-streaming pass over the calibration batches, before pruning starts: for each decoder
block in order, every batch runs through the dense block (its input is the dense previous block's
output) while `StatisticsPass` accumulates Σx² per linear input, and the pass measures

- influence = 1 − mean cosine similarity between the block's input and output hidden state, over the
  real (non-padding) calibration tokens: a block that barely changes the residual stream matters less;
- outlier ratio (OWL) = share of the block's Wanda scores |W|·sqrt(Σx²) above M × the mean score over
  all of the block's linears.

The pass keeps its own list of hidden states (block outputs are new tensors), so the batches that
prune_blocks will advance are left untouched. Cost: one more dense forward of every block over the
calibration set (about what prune_blocks spends on its statistics forwards), one more copy of the hidden
states, and a score computation per linear (no sort).

The result goes into report.json under `block_importance`; `--importance_from report.json` reads it back
so that a second run with other tier settings skips this pass.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..distributed import SINGLE_PROCESS, DataParallel
from ..errors import UserError
from ..models.blocks import decoder_blocks, linear_layers
from ..report.types import BlockImportance, Report
from .allocation import BlockProfile
from .batches import BlockBatch, call_block
from .block_loop import BlockStore, as_block_store
from .statistics import StatisticsPass


def _outlier_ratio(linears: dict[str, nn.Linear], statistics: StatisticsPass, owl_m: float) -> float:
    # Two passes over the scores (sum, then count) so that no block-sized score vector is ever held.
    def scores():
        for name, linear in linears.items():
            yield linear.weight.detach().abs().float() * torch.sqrt(statistics.statistic(name).float()).unsqueeze(0)

    total, count = 0.0, 0
    for score in scores():
        total += float(score.sum(dtype=torch.float64))
        count += score.numel()
    threshold = owl_m * total / max(count, 1)
    above = sum(int((score > threshold).sum()) for score in scores())
    return above / max(count, 1)


@torch.no_grad()
def measure_block_importance(
    blocks: "BlockStore | nn.Module", batches: list[BlockBatch], *, owl_m: float = 5.0, progress: bool = True,
    measured_on: dict | None = None, replicas: DataParallel = SINGLE_PROCESS,
) -> BlockImportance:
    """Influence and OWL outlier ratio of every block, from one dense pass over `batches` (not modified).
    `replicas`: a data-parallel run, `batches` being this rank's share; the per-batch cosine sums are
    gathered and added in global order, as one process adds them."""
    if not batches:
        raise ValueError("measuring block importance needs calibration batches")
    started = time.perf_counter()
    hidden = [batch.hidden for batch in batches]
    influence, outlier = [], []
    store = as_block_store(blocks)
    for index in tqdm(range(len(store)), desc="block importance", unit="block", disable=not progress):
        block = store.load(index)
        linears = linear_layers(block)
        statistics = StatisticsPass(linears, replicas=replicas)
        cosine_sums, token_counts = [], []
        outputs = []
        with statistics:
            for batch, inputs in zip(batches, hidden):
                statistics.start_batch(batch.token_mask)
                out = call_block(block, BlockBatch(inputs, batch.kwargs, batch.token_mask))
                cosine = F.cosine_similarity(inputs.float(), out.float(), dim=-1)  # [b, L]
                if batch.token_mask is not None:
                    cosine = cosine[batch.token_mask]
                cosine_sums.append(float(cosine.sum(dtype=torch.float64)))
                token_counts.append(cosine.numel())
                outputs.append(out)
        hidden = outputs
        cosine_sum = 0.0
        for value in replicas.gather_floats(cosine_sums):  # in global batch order, as one process adds them
            cosine_sum += value
        tokens = sum(replicas.gather_ints(token_counts))
        influence.append(1.0 - cosine_sum / max(tokens, 1))
        outlier.append(_outlier_ratio(linears, statistics, owl_m))
        store.release(index, block, pruned=False)
    return BlockImportance(
        influence=influence, outlier=outlier, owl_m=owl_m, measured_on=dict(measured_on or {}),
        seconds=time.perf_counter() - started,
    )


def load_block_importance(path: str) -> BlockImportance:
    """Read `block_importance` back from an earlier report.json (or a --save directory holding one)."""
    report_path = Path(path).expanduser()
    try:
        report = Report.load(report_path)
    except FileNotFoundError:
        raise UserError(f"--importance_from {path!r}: no such report (give a report.json or the --save directory of a run)") from None
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"--importance_from {path!r}: cannot read it as a JSON report ({exc})") from None
    cached = report.block_importance
    if cached is None:
        raise UserError(
            f"--importance_from {path!r}: the report has no block_importance; it comes from a run with "
            "--sparsity_allocation three_tier or owl"
        )
    try:
        influence = [float(v) for v in cached.influence]
        outlier = [float(v) for v in cached.outlier]
        owl_m = float(cached.owl_m)
    except (TypeError, ValueError):
        raise UserError(f"--importance_from {path!r}: block_importance is incomplete (needs influence, outlier, owl_m)") from None
    if len(influence) != len(outlier) or not influence or not all(math.isfinite(v) for v in influence + outlier):
        raise UserError(f"--importance_from {path!r}: block_importance lists are empty, of unequal length or not finite")
    source = report_path / "report.json" if report_path.is_dir() else report_path
    return BlockImportance(influence=influence, outlier=outlier, owl_m=owl_m, measured_on=dict(cached.measured_on or {}),
                           source=str(source))


def check_cached_importance(cached: BlockImportance, *, model_name: str, num_blocks: int, statistic: str,
                            owl_m: float, measured_on: dict) -> list[str]:
    """Refuse a cache that cannot apply to this run; return notes on the harmless differences."""
    where = f"--importance_from {cached.source!r}"
    cached_model = cached.measured_on.get("model")
    if cached_model is not None and cached_model != model_name:
        raise UserError(f"{where}: measured on model {cached_model!r}, this run prunes {model_name!r}; drop --importance_from")
    if cached.num_blocks != num_blocks:
        raise UserError(f"{where}: has {cached.num_blocks} blocks, the model has {num_blocks}; drop --importance_from")
    if statistic == "outlier" and abs(cached.owl_m - owl_m) > 1e-12:
        raise UserError(
            f"{where}: outlier ratios were measured with --owl_m {cached.owl_m:g}, not {owl_m:g}; "
            f"use --owl_m {cached.owl_m:g} or drop --importance_from"
        )
    notes = []
    for key, value in measured_on.items():
        if key != "model" and key in cached.measured_on and cached.measured_on[key] != value:
            notes.append(f"block importance reused from a run with {key}={cached.measured_on[key]!r} (this run: {value!r})")
    return notes


def block_profile(model: nn.Module, statistic: list[float] | None = None, row_rounding: bool = False) -> BlockProfile:
    """Parameter counts and linear shapes per block, for the allocation policies."""
    shapes = tuple(
        tuple((int(linear.out_features), int(linear.in_features)) for linear in linear_layers(block).values())
        for block in decoder_blocks(model)
    )
    params = tuple(sum(rows * cols for rows, cols in block) for block in shapes)
    return BlockProfile(
        params=params, shapes=shapes, statistic=None if statistic is None else tuple(statistic), row_rounding=row_rounding
    )


def achieved_block_sparsity(model: nn.Module, per_layer: dict[str, float]) -> list[float]:
    """Achieved sparsity per block (parameter-weighted over its linears) from prune_blocks' per_layer."""
    blocks = decoder_blocks(model)
    prefix = next((f"{name}." for name, module in model.named_modules() if module is blocks), "blocks.")
    achieved = []
    for index, block in enumerate(blocks):
        pruned = total = 0.0
        for name, linear in linear_layers(block).items():
            numel = linear.weight.numel()
            pruned += per_layer.get(f"{prefix}{index}.{name}", 0.0) * numel
            total += numel
        achieved.append(pruned / total if total else 0.0)
    return achieved
