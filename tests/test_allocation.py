"""Sparsity allocation: the math (mean preserved, clamping, tiers), the dense importance pass, and the
three policies end to end on tiny models, including the importance cache round trip and the report plot."""

from __future__ import annotations

import json
import random
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import cli
from wanda_engine.errors import UserError
from wanda_engine.models import decoder_blocks, linear_layers
from wanda_engine.prune.allocation import (
    ALLOCATIONS, AllocationOptions, BlockProfile, allocation_options, auto_tier_delta,
)
from wanda_engine.prune.allocation.solve import (
    MAX_RATIO, match_realized, rowwise_pruned, shift_to_mean, split_tiers, tier_sizes, weighted_mean,
)
from wanda_engine.prune.importance import block_profile, measure_block_importance
from wanda_engine.prune.methods import METHODS
from wanda_engine.prune.batches import capture_block_inputs
from wanda_engine.prune.block_loop import prune_blocks
from wanda_engine.prune.schedules import SCHEDULES
from wanda_engine.prune.statistics import StatisticsPass
from wanda_engine.prune.sparsity import SparsityTarget, parse_sparsity

from model_helpers import text_perplexity, tiny_llama
from test_cli import base_args, run_cli

# --------------------------------------------------------------------------------------------------
# Allocation math
# --------------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    base=st.lists(st.floats(-0.5, 1.5), min_size=1, max_size=40),
    data=st.data(),
    target=st.floats(0.0, 0.985),
)
def test_shift_to_mean_preserves_weighted_mean_and_clamps(base, data, target):
    weights = data.draw(st.lists(st.integers(1, 10**7), min_size=len(base), max_size=len(base)))
    ratios = shift_to_mean(base, weights, target)
    assert all(0.0 <= r <= MAX_RATIO for r in ratios)
    assert weighted_mean(ratios, weights) == pytest.approx(target, abs=1e-12)
    # One common offset: the unclamped blocks keep their differences.
    free = [(b, r) for b, r in zip(base, ratios) if 0.0 < r < MAX_RATIO]
    if len(free) > 1:
        offsets = [r - b for b, r in free]
        assert max(offsets) - min(offsets) < 1e-9


def test_clamped_blocks_give_their_share_to_the_others():
    ratios = shift_to_mean([0.75, 0.85, 0.95, 1.05], [1, 1, 1, 1], 0.9)
    assert ratios[-1] == MAX_RATIO  # would be 1.05: clamped
    assert sum(ratios) / 4 == pytest.approx(0.9, abs=1e-12)
    assert ratios[1] - ratios[0] == pytest.approx(0.1) and ratios[2] - ratios[1] == pytest.approx(0.1)
    assert shift_to_mean([0.2, 0.3], [1, 1], 0.995) == [MAX_RATIO, MAX_RATIO]  # unreachable: all at the bound
    assert shift_to_mean([0.2, 0.3], [1, 1], 0.0) == [0.0, 0.0]


def test_unequal_block_sizes_weight_the_mean():
    ratios = shift_to_mean([0.6, 0.8], [1, 3], 0.7)
    assert 0.25 * ratios[0] + 0.75 * ratios[1] == pytest.approx(0.7, abs=1e-12)
    assert ratios[1] - ratios[0] == pytest.approx(0.2)


@pytest.mark.parametrize("n", range(1, 41))
def test_tier_sizes_cover_every_block(n):
    sizes = tier_sizes(n, (0.33, 0.34, 0.33))
    assert sum(sizes) == n and all(s >= 0 for s in sizes)
    assert max(sizes) - min(sizes) <= 1
    assert tier_sizes(30, (0.33, 0.34, 0.33)) == [10, 10, 10]
    assert tier_sizes(10, (0.2, 0.5, 0.3)) == [2, 5, 3]


def test_tier_split_ranks_by_importance():
    importance = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2]
    assert split_tiers(importance, (1 / 3, 1 / 3, 1 / 3)) == [0, 2, 1, 1, 0, 2]


def test_tier_split_is_stable_under_ties():
    # Equal importances keep block order: the earlier block goes to the more important tier.
    assert split_tiers([0.5] * 6, (1 / 3, 1 / 3, 1 / 3)) == [0, 0, 1, 1, 2, 2]
    assert split_tiers([1.0, 0.5, 0.5, 0.5, 0.5, 0.0], (1 / 3, 1 / 3, 1 / 3)) == [0, 0, 1, 1, 2, 2]
    # Same answer on every call and regardless of how the list was built.
    values = [0.2, 0.2, 0.7, 0.2, 0.7, 0.1]
    first = split_tiers(values, (0.33, 0.34, 0.33))
    assert first == split_tiers(tuple(values), (0.33, 0.34, 0.33)) == [1, 1, 0, 2, 0, 2]
    with pytest.raises(ValueError):
        split_tiers([0.1, float("nan")], (0.33, 0.34, 0.33))


def _profile(n=9, statistic=None, params=None):
    params = params or [100] * n
    return BlockProfile(params=tuple(params), statistic=None if statistic is None else tuple(statistic))


def test_three_tier_offsets_and_mean():
    importance = [0.5, 0.9, 0.1, 0.8, 0.2, 0.6, 0.3, 0.7, 0.4]
    params = [100, 200, 100, 300, 100, 100, 50, 100, 100]
    options = AllocationOptions(tier_delta=0.1)
    allocation = ALLOCATIONS.get("three_tier").allocate(SparsityTarget(0.6), _profile(statistic=importance, params=params), options)
    assert allocation.tiers == ["middle", "high", "low", "high", "low", "middle", "low", "high", "middle"]
    ratios = allocation.ratios
    by_tier = {t: {round(r, 12) for r, tt in zip(ratios, allocation.tiers) if tt == t} for t in ("high", "middle", "low")}
    assert all(len(v) == 1 for v in by_tier.values())  # one ratio per tier
    high, middle, low = (by_tier[t].pop() for t in ("high", "middle", "low"))
    assert middle - high == pytest.approx(0.1) and low - middle == pytest.approx(0.1)
    assert weighted_mean(ratios, params) == pytest.approx(0.6, abs=1e-12)
    assert allocation.mean_forced


@pytest.mark.parametrize("target, delta", [(0.3, 0.0), (0.4, 0.0), (0.5, 0.05), (0.6, 0.1), (0.7, 0.15), (0.8, 0.2)])
def test_default_tier_delta_grows_with_the_target(target, delta):
    assert auto_tier_delta(target) == pytest.approx(delta)
    allocation = ALLOCATIONS.get("three_tier").allocate(SparsityTarget(target), _profile(3, [3, 2, 1]), AllocationOptions())
    assert allocation.delta == pytest.approx(delta)
    spread = max(allocation.ratios) - min(allocation.ratios)
    if target + delta < MAX_RATIO:
        assert spread == pytest.approx(2 * delta)
    else:  # the low tier is clamped at 0.99 and the others carry the rest
        assert spread < 2 * delta and max(allocation.ratios) == MAX_RATIO


def test_three_tier_clamps_and_redistributes_at_high_target():
    allocation = ALLOCATIONS.get("three_tier").allocate(
        SparsityTarget(0.95), _profile(statistic=[3, 2, 1, 6, 5, 4, 9, 8, 7]), AllocationOptions(tier_delta=0.1)
    )
    assert max(allocation.ratios) == MAX_RATIO
    assert weighted_mean(allocation.ratios, [1] * 9) == pytest.approx(0.95, abs=1e-12)


def test_three_tier_types_per_tier_report_the_achieved_mean():
    options = allocation_options("three_tier", SparsityTarget(0.5), tier_types="4:8,2:4,unstructured", tier_delta=0.1)
    allocation = ALLOCATIONS.get("three_tier").allocate(SparsityTarget(0.5), _profile(3, [3, 2, 1]), options)
    assert [t.label for t in allocation.targets] == ["4:8", "2:4", "unstructured"]
    assert allocation.ratios == pytest.approx([0.5, 0.5, 0.6])
    assert not allocation.mean_forced and "0.5333" in allocation.notes[0]


def test_owl_maps_outlier_ratio_linearly_and_keeps_the_mean():
    outliers = [0.01, 0.03, 0.02, 0.05, 0.01]
    allocation = ALLOCATIONS.get("owl").allocate(SparsityTarget(0.7), _profile(5, outliers), AllocationOptions(owl_lambda=0.08))
    ratios = allocation.ratios
    assert weighted_mean(ratios, [1] * 5) == pytest.approx(0.7, abs=1e-12)
    assert max(ratios) - min(ratios) == pytest.approx(0.16)
    assert ratios.index(min(ratios)) == 3  # most outliers: pruned least
    assert ratios[0] == ratios[4] == max(ratios)
    assert ratios[1] < ratios[2] < ratios[0]
    flat = ALLOCATIONS.get("owl").allocate(SparsityTarget(0.7), _profile(3, [0.02] * 3), AllocationOptions())
    assert flat.ratios == pytest.approx([0.7] * 3) and flat.notes


def test_uniform_is_unchanged():
    assert ALLOCATIONS.get("uniform").allocate(SparsityTarget(0.5), _profile(4), AllocationOptions()).ratios == [0.5] * 4
    two_four = parse_sparsity("2:4", None)
    assert ALLOCATIONS.get("uniform").allocate(two_four, _profile(2), AllocationOptions()).targets == [two_four] * 2


def test_match_realized_hits_the_pruned_count():
    rng = random.Random(0)
    shapes = tuple(
        ((576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)) for _ in range(30)
    )
    params = [sum(r * c for r, c in block) for block in shapes]
    base = [0.7 + rng.uniform(-0.1, 0.1) for _ in shapes]
    for target in (0.5, 0.6, 0.7):
        ratios = match_realized([b - 0.7 + target for b in base], params, shapes, target)
        realized = rowwise_pruned(ratios, shapes) / sum(params)
        assert realized == pytest.approx(target, abs=1e-4)
        plain = shift_to_mean([b - 0.7 + target for b in base], params, target)
        assert abs(realized - target) <= abs(rowwise_pruned(plain, shapes) / sum(params) - target)


def test_options_are_checked_before_any_work():
    target = SparsityTarget(0.5)
    assert allocation_options("three_tier", target).tier_delta is None  # auto: (target - 0.4) / 2
    assert allocation_options("owl", target, owl_lambda=0.1, owl_m=7).owl_m == 7.0
    for policy, kwargs, needle in [
        ("owl", {"tier_delta": 0.1}, "--tier_delta"),
        ("uniform", {"importance": "influence"}, "--importance"),
        ("uniform", {"importance_from": "x.json"}, "--importance_from"),
        ("three_tier", {"owl_lambda": 0.1}, "--owl_lambda"),
        ("three_tier", {"owl_m": 5}, "--owl_m"),  # needs --importance outlier
        ("three_tier", {"importance": "entropy"}, "entropy"),
        ("three_tier", {"tier_fractions": "0.5,0.5"}, "--tier_fractions"),
        ("three_tier", {"tier_fractions": "0.5,0.5,0.5"}, "--tier_fractions"),
        ("three_tier", {"tier_delta": 1.5}, "--tier_delta"),
        ("three_tier", {"tier_types": "2:4,unstructured"}, "--tier_types"),
        ("three_tier", {"tier_types": "2:4,3:3,unstructured"}, "3:3"),
        ("owl", {"owl_m": 0}, "--owl_m"),
        ("owl", {"owl_lambda": -0.1}, "--owl_lambda"),
    ]:
        with pytest.raises(UserError, match=needle.replace("-", r"\-")):
            allocation_options(policy, target, **kwargs)
    with pytest.raises(UserError, match="unstructured"):
        allocation_options("owl", parse_sparsity("2:4", None))
    with pytest.raises(UserError, match="--tier_types"):
        allocation_options("three_tier", parse_sparsity("2:4", None), tier_types="4:8,2:4,unstructured")


# --------------------------------------------------------------------------------------------------
# The dense importance pass
# --------------------------------------------------------------------------------------------------


def _batches(model, seed=1, rows=4, length=16, attention_mask=None):
    ids = torch.randint(3, 291, (rows, length), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask
    return capture_block_inputs(model, ids, mask, 2, torch.device("cpu"))


def test_importance_pass_leaves_batches_and_weights_untouched(tiny_model):
    batches = _batches(tiny_model)
    before = [(b.hidden, b.hidden.clone()) for b in batches]
    weights = {n: p.clone() for n, p in tiny_model.named_parameters()}
    importance = measure_block_importance(tiny_model, batches, progress=False)
    assert all(b.hidden is same and torch.equal(b.hidden, copy) for b, (same, copy) in zip(batches, before))
    assert all(torch.equal(p, weights[n]) for n, p in tiny_model.named_parameters())
    n_blocks = len(decoder_blocks(tiny_model))
    assert len(importance.influence) == len(importance.outlier) == n_blocks
    assert all(0.0 <= v <= 2.0 for v in importance.influence)
    assert all(0.0 <= v <= 1.0 for v in importance.outlier)


def test_block_that_changes_nothing_has_zero_influence():
    model = tiny_llama("gqa")
    with torch.no_grad():  # no attention output and no MLP output: the block is the identity
        decoder_blocks(model)[1].self_attn.o_proj.weight.zero_()
        decoder_blocks(model)[1].mlp.down_proj.weight.zero_()
    importance = measure_block_importance(model, _batches(model), progress=False)
    assert importance.influence[1] == pytest.approx(0.0, abs=1e-6)
    assert importance.influence[0] > 0.01 and importance.influence[2] > 0.01


def test_outlier_ratio_is_owl_share_of_block_scores():
    model = tiny_llama("odd")
    batches = _batches(model)
    importance = measure_block_importance(model, batches, owl_m=2.0, progress=False)
    block = decoder_blocks(model)[0]
    statistics = StatisticsPass(linear_layers(block))
    with statistics, torch.no_grad():
        for batch in batches:
            statistics.start_batch(batch.token_mask)
            block(batch.hidden, use_cache=False, **batch.kwargs)
    scores = torch.cat([
        (linear.weight.abs() * statistics.statistic(name).sqrt()).flatten()
        for name, linear in linear_layers(block).items()
    ])
    expected = float((scores > 2.0 * scores.mean()).float().mean())
    assert importance.outlier[0] == pytest.approx(expected, abs=1.0 / scores.numel())
    assert importance.outlier[0] > 0


def test_importance_ignores_padding():
    model = tiny_llama("gqa")
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 291, (3, 10), generator=gen)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 8:] = 0
    padded_ids = torch.cat([ids, torch.randint(3, 291, (3, 5), generator=gen)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(3, 5, dtype=torch.long)], dim=1)
    a = measure_block_importance(model, capture_block_inputs(model, ids, mask, 3, torch.device("cpu")), progress=False)
    b = measure_block_importance(model, capture_block_inputs(model, padded_ids, padded_mask, 3, torch.device("cpu")), progress=False)
    assert a.influence == pytest.approx(b.influence, rel=1e-5)
    assert a.outlier == pytest.approx(b.outlier, abs=1e-6)


def test_tier_types_prune_each_tier_with_its_pattern():
    model = tiny_llama("gqa")
    batches = _batches(model)
    importance = measure_block_importance(model, batches, progress=False)
    options = allocation_options("three_tier", SparsityTarget(0.5), tier_types="4:8,2:4,unstructured")
    allocation = ALLOCATIONS.get("three_tier").allocate(SparsityTarget(0.5), block_profile(model, importance.influence), options)
    prune_blocks(model, batches, METHODS.get("wanda"), allocation.targets, schedule=SCHEDULES.get("reference"), progress=False)
    for block, target in zip(decoder_blocks(model), allocation.targets):
        for name, linear in linear_layers(block).items():
            zeros = linear.weight == 0
            if target.structured:
                groups = zeros.view(zeros.shape[0], -1, target.m).sum(dim=-1)
                assert (groups == target.n).all(), (target.label, name)
            else:
                assert (zeros.sum(dim=1) == int(linear.in_features * target.ratio)).all(), name


def test_row_rounding_prediction_matches_the_pruned_model():
    model = tiny_llama("gqa")
    batches = _batches(model)
    profile = block_profile(model, [0.9, 0.1, 0.5], row_rounding=True)
    allocation = ALLOCATIONS.get("three_tier").allocate(SparsityTarget(0.6), profile, AllocationOptions())
    outcome = prune_blocks(model, batches, METHODS.get("wanda"), allocation.targets, schedule=SCHEDULES.get("reference"), progress=False)
    assert outcome.pruned_params == rowwise_pruned(allocation.ratios, profile.shapes)


# --------------------------------------------------------------------------------------------------
# End to end through the CLI
# --------------------------------------------------------------------------------------------------


def _run(tiny_model_dir, calibration_text_file, tmp_path, capsys, name, extra, eval_none=True):
    save = tmp_path / name
    argv = base_args(tiny_model_dir, calibration_text_file, tmp_path) + ["--save", str(save)] + extra
    if eval_none:
        argv += ["--eval", "none"]
    code, out, err = run_cli(argv, capsys)
    report = json.loads((save / "report.json").read_text()) if code == 0 else None
    return code, out, err, save, report


@pytest.mark.parametrize("policy", ["uniform", "three_tier", "owl"])
def test_each_policy_end_to_end(policy, tiny_model_dir, calibration_text_file, tmp_path, capsys):
    code, out, err, save, report = _run(
        tiny_model_dir, calibration_text_file, tmp_path, capsys, policy,
        ["--sparsity_allocation", policy, "--sparsity_ratio", "0.6", "--save_model", str(tmp_path / "pruned")],
        eval_none=policy != "three_tier",
    )
    assert code == 0, err
    allocation = report["allocation"]
    assert allocation["policy"] == report["sparsity_allocation"] == policy
    assert len(report["block_sparsity"]) == len(allocation["block_achieved"]) == 3
    assert report["actual_sparsity"] == pytest.approx(0.6, abs=0.01)
    md = (save / "report.md").read_text()
    assert "## Sparsity allocation" in md and "![importance and sparsity per block](block_allocation.png)" in md
    assert (save / "block_allocation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if policy == "uniform":
        assert report["block_importance"] is None and allocation["tiers"] is None
        assert report["block_sparsity"] == [0.6] * 3
        assert "importance_s" not in report["timings"]
    else:
        importance = report["block_importance"]
        assert len(importance["influence"]) == len(importance["outlier"]) == 3 and importance["source"] == "measured"
        assert "importance_s" in report["timings"]
        assert allocation["mean_ratio"] == pytest.approx(0.6, abs=0.02)
        assert len(set(round(r, 9) for r in report["block_sparsity"])) > 1  # not uniform
    if policy == "three_tier":
        assert sorted(allocation["tiers"]) == ["high", "low", "middle"]
        high = allocation["tiers"].index("high")
        assert report["block_importance"]["influence"][high] == max(report["block_importance"]["influence"])
        # the reported perplexity is that of the model it saved, pruned block by block at the tiers' ratios
        assert report["ppl_pruned"] == pytest.approx(text_perplexity(tmp_path / "pruned", calibration_text_file, 32, 3), rel=1e-5)
        assert allocation["tier_delta_used"] == pytest.approx(0.1) and "tier_delta=auto (0.1)" in md


def test_importance_cache_round_trip(tiny_model_dir, calibration_text_file, tmp_path, capsys):
    code, _, err, first_dir, first = _run(
        tiny_model_dir, calibration_text_file, tmp_path, capsys, "first",
        ["--sparsity_allocation", "three_tier", "--sparsity_ratio", "0.6"],
    )
    assert code == 0, err
    code, out, err, _, second = _run(
        tiny_model_dir, calibration_text_file, tmp_path, capsys, "second",
        ["--sparsity_allocation", "three_tier", "--sparsity_ratio", "0.6", "--tier_delta", "0.2",
         "--importance_from", str(first_dir / "report.json")],
    )
    assert code == 0, err
    assert "importance_s" not in second["timings"] and "read from" in out
    cached, reused = first["block_importance"], second["block_importance"]
    assert reused["influence"] == cached["influence"] and reused["outlier"] == cached["outlier"]
    assert reused["source"] == str(first_dir / "report.json") and reused["measured_on"] == cached["measured_on"]
    assert second["allocation"]["tiers"] == first["allocation"]["tiers"]
    spread = lambda r: max(r["block_sparsity"]) - min(r["block_sparsity"])  # noqa: E731
    assert spread(second) == pytest.approx(0.4, abs=1e-9) and spread(first) == pytest.approx(0.2, abs=1e-9)
    # The directory works too, and OWL reuses the same cache (measured with the default --owl_m 5).
    code, _, err, _, third = _run(
        tiny_model_dir, calibration_text_file, tmp_path, capsys, "third",
        ["--sparsity_allocation", "owl", "--sparsity_ratio", "0.6", "--importance_from", str(first_dir)],
    )
    assert code == 0, err
    assert third["block_importance"]["outlier"] == cached["outlier"]
    # A cache measured with another --owl_m cannot give outlier ratios for this one.
    code, _, err, _, _ = _run(
        tiny_model_dir, calibration_text_file, tmp_path, capsys, "fourth",
        ["--sparsity_allocation", "owl", "--owl_m", "3", "--importance_from", str(first_dir)],
    )
    assert code == 2 and "--owl_m 5" in err and not (tmp_path / "fourth").exists()


def test_importance_from_a_report_without_it(tiny_model_dir, calibration_text_file, tmp_path, capsys):
    code, _, err, uniform_dir, _ = _run(tiny_model_dir, calibration_text_file, tmp_path, capsys, "u", [])
    assert code == 0, err
    incomplete, not_a_dict = tmp_path / "incomplete.json", tmp_path / "not_a_dict.json"
    incomplete.write_text(json.dumps({"block_importance": {"influence": [0.1, 0.2, 0.3], "outlier": [0.0, 0.0, 0.0]}}))
    not_a_dict.write_text(json.dumps({"block_importance": [0.1, 0.2, 0.3]}))
    for source, needle in [(uniform_dir, "the report has no block_importance"), (tmp_path / "missing.json", "no such report"),
                           (incomplete, "block_importance is incomplete"), (not_a_dict, "the report has no block_importance")]:
        code, _, err, _, _ = _run(
            tiny_model_dir, calibration_text_file, tmp_path, capsys, "again",
            ["--sparsity_allocation", "three_tier", "--importance_from", str(source)],
        )
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and needle in lines[0], err


def test_tier_types_end_to_end_report_achieved(tiny_model_dir, calibration_text_file, tmp_path, capsys):
    code, _, err, save, report = _run(
        tiny_model_dir, calibration_text_file, tmp_path, capsys, "types",
        ["--sparsity_allocation", "three_tier", "--tier_types", "4:8,2:4,unstructured"],
    )
    assert code == 0, err
    allocation = report["allocation"]
    assert sorted(allocation["block_types"]) == ["2:4", "4:8", "unstructured"]
    assert not allocation["mean_forced"] and allocation["settings"]["tier_types"] == ["4:8", "2:4", "unstructured"]
    assert report["actual_sparsity"] == pytest.approx(sum(allocation["block_achieved"]) / 3, abs=1e-9)
    assert "achieved, not forced" in (save / "report.md").read_text()


def test_plot_skipped_with_a_note_without_matplotlib(tiny_model_dir, calibration_text_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    code, _, err, save, _ = _run(
        tiny_model_dir, calibration_text_file, tmp_path, capsys, "noplot", ["--sparsity_allocation", "owl"]
    )
    assert code == 0, err
    assert not (save / "block_allocation.png").exists()
    assert "No plot: matplotlib is not installed" in (save / "report.md").read_text()


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--tier_delta", "0.2"], "--tier_delta"),
        (["--sparsity_allocation", "owl", "--sparsity_type", "2:4"], "unstructured"),
        (["--sparsity_allocation", "three_tier", "--tier_types", "2:4,bogus,unstructured"], "bogus"),
        (["--sparsity_allocation", "three_tier", "--importance", "entropy"], "entropy"),
        (["--sparsity_allocation", "three_tier", "--tier_fractions", "a,b,c"], "--tier_fractions"),
    ],
)
def test_bad_allocation_flags_exit_2_one_line(extra, needle, tiny_model_dir, calibration_text_file, tmp_path, capsys):
    code, _, err, save, _ = _run(tiny_model_dir, calibration_text_file, tmp_path, capsys, "bad", extra)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert not save.exists()


def test_cli_help_lists_the_policies(capsys):
    with pytest.raises(SystemExit):
        cli.main(["prune", "--help"])
    out = capsys.readouterr().out
    for flag in ("three_tier", "owl", "--importance_from", "--tier_types", "--owl_lambda"):
        assert flag in out


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("policy", ["owl", "three_tier"])
def test_magnitude_with_a_measured_block_importance(policy, stream, tiny_model_dir, calibration_text_file, tmp_path):
    """Magnitude needs no statistics, but the allocation's block importance does: the calibration
    batches serve the importance pass, then every block is pruned from its weights alone."""
    from model_helpers import tiny_run_config
    from wanda_engine.api import run_prune

    report = run_prune(tiny_run_config(tiny_model_dir, calibration_text_file, tmp_path, prune_method="magnitude",
                                       sparsity_allocation=policy, sparsity_ratio=0.6, stream=stream, eval="none"),
                       log=lambda *_: None)
    assert report.block_importance is not None and report.block_importance.source == "measured"
    assert report.actual_sparsity == pytest.approx(0.6, abs=0.01) and len(set(report.block_sparsity)) > 1
