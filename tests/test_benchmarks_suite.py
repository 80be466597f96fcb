"""The pieces of `python -m benchmarks` (benchmarks/suite.py and the modules it runs), without running any
benchmark: goals, mask agreement on saved weights, rendering, and the intro/section-keeping atomic write.
About a second."""

from __future__ import annotations

import argparse
import sys

import pytest
import torch
from safetensors.torch import save_file

from benchmarks import document, masks, measure, render, runner, suite
from benchmarks.goals import evaluate_goals, growth_goals, rss_budget_mb
from benchmarks.measure import E2EResult, ScalingResult
from benchmarks.runner import Side
from wanda_engine.report import MemoryReport


def _side(key, prune_s, rss, ppl=None, agreement=None, available=True, note=""):
    return Side(key, key, available=available, note=note, prune_s=prune_s, peak_rss_mb=rss, ppl=ppl,
                agreement=agreement, actual_sparsity=None if key == "floor" else 0.5, load=1.0)


def _e2e_sides(seq_available=True):
    return {
        "floor": _side("floor", 10.0, 900),
        "engine_reference": _side("engine_reference", 20.0, 700, ppl=61.7, agreement=0.9995),
        "engine_sequential": _side("engine_sequential", 12.0, 650, ppl=61.9, agreement=0.97)
        if seq_available else _side("engine_sequential", None, None, available=False, note="not available: error: x"),
        "restatement": _side("restatement", 50.0, 1200, ppl=61.8),
    }


def test_goals_pass_fail_and_not_available():
    goals = evaluate_goals(_e2e_sides())
    status = {g.text: g.status for g in goals}
    assert len(goals) == 10
    assert status["reference: ≥ 99.9% identical mask entries"] == "pass"
    assert status["reference: prune stage ≤ 2.2× the floor"] == "pass"          # 2.0×
    assert status["sequential: prune stage ≤ 1.3× the floor"] == "pass"         # 1.2×
    assert status["sequential: ≥ 2× faster than the re-statement"] == "pass"    # 4.2×
    assert status["reference: lower peak RSS than the re-statement"] == "pass"
    sides = _e2e_sides()
    sides["engine_reference"].prune_s = 23.0                                     # 2.3× the floor
    sides["engine_sequential"].ppl = 62.2                                        # +0.8% over reference
    status = {g.text: g.status for g in evaluate_goals(sides)}
    assert status["reference: prune stage ≤ 2.2× the floor"] == "FAIL"
    assert status["sequential: ppl no worse than the reference schedule's by > 0.5%"] == "FAIL"
    status = {g.text: g.status for g in evaluate_goals(_e2e_sides(seq_available=False))}
    assert status["sequential: prune stage ≤ 1.3× the floor"] == "n/a"
    assert status["reference: ppl within 0.5% of the re-statement"] == "pass"


def test_memory_budget_goal_from_the_reports_memory_figures():
    sides = _e2e_sides()
    memory = MemoryReport.from_json({"block_weights_mb": 15.0, "embeddings_mb": 110.0, "hidden_states_mb": 35.0})
    for key in ("engine_reference", "engine_sequential"):
        sides[key].info["memory"] = memory
    sides["engine_sequential"].peak_rss_mb = 950.0
    goals = {g.text: g for g in evaluate_goals(sides, baseline_rss=450.0)}
    budget_text = "peak RSS ≤ 1.5× (block + hidden states + embeddings + baseline)"
    assert rss_budget_mb(sides["engine_reference"], 450.0) == pytest.approx(1.5 * 610.0)  # 915 MB
    assert goals[f"reference: {budget_text}"].status == "pass"                   # 700 MB
    assert goals[f"sequential: {budget_text}"].status == "FAIL"                  # 950 MB
    assert goals[f"sequential: {budget_text}"].value == "950 vs 915 MB"
    assert {g.text: g.status for g in evaluate_goals(sides)}[f"reference: {budget_text}"] == "n/a"  # no baseline
    # An untied lm_head is part of what a run holds; reports from before the field still budget.
    sides["engine_reference"].info["memory"] = MemoryReport(15.0, 110.0, 20.0, 35.0)
    assert rss_budget_mb(sides["engine_reference"], 450.0) == pytest.approx(1.5 * 630.0)


def test_scaling_growth_goal_only_for_a_fourfold_depth():
    def sides(rss):
        return {"engine_reference": _side("engine_reference", 1.0, rss), "engine_sequential": _side("engine_sequential", 1.0, 2 * rss)}

    lines = growth_goals({8: sides(800), 32: sides(1000)}, 8, 32)
    assert "- engine_reference: pass (+25%: 800 → 1000 MB)" in lines
    assert "- engine_sequential: pass (+25%: 1600 → 2000 MB)" in lines
    lines = growth_goals({8: sides(800), 32: sides(1100)}, 8, 32)
    assert "- engine_reference: **FAIL** (+38%: 800 → 1100 MB)" in lines
    assert growth_goals({2: sides(800), 4: sides(1100)}, 2, 4) == []


def test_mask_agreement_reads_only_block_linears(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    w = torch.arange(1.0, 17.0).reshape(4, 4)
    wa, wb = w.clone(), w.clone()
    wa[0, :2] = 0
    wb[0, 1:3] = 0  # differs from wa in two entries: (0,0) and (0,2)
    norm = torch.zeros(4)  # 1-D, not a linear: ignored even though all zero
    save_file({"model.layers.0.mlp.up_proj.weight": wa, "model.layers.0.input_layernorm.weight": norm,
               "model.embed_tokens.weight": torch.zeros(8, 4)}, str(a / "model.safetensors"))
    save_file({"model.layers.0.mlp.up_proj.weight": wb}, str(b / "model-00001.safetensors"))
    save_file({"model.layers.0.input_layernorm.weight": torch.ones(4), "model.embed_tokens.weight": torch.ones(8, 4)},
              str(b / "model-00002.safetensors"))
    assert masks.mask_agreement(a, b) == (14, 16)
    assert masks.mask_agreement(a, a) == (16, 16)


def test_fastest_run_counts_and_the_others_models_go(tmp_path):
    slow, fast = (Side("engine_reference", "engine", prune_s=t, model_dir=tmp_path / str(t)) for t in (30.0, 20.0))
    for run in (slow, fast):
        run.model_dir.mkdir()
    best = measure.fastest([slow, fast])
    assert best is fast and best.runs_s == [30.0, 20.0]
    assert fast.model_dir.is_dir() and not slow.model_dir.exists()


def test_render_e2e_and_scaling_tables():
    e2e = E2EResult(
        groups=[(("unstructured", 0.5), _e2e_sides()), (("2:4", None), _e2e_sides(seq_available=False))],
        dense_ppl=29.2, calibration="cal", evaluation="ev", threads=2, nsamples=32, seqlen=512, batch_size=8,
        commands=["    python cli.py prune"], measured="now", repeats=2,
    )
    e2e.groups[0][1]["engine_reference"].runs_s = [20.0, 22.5]
    text = render.render_e2e(e2e, baseline_rss=450.0)
    assert "| unstructured 0.5 | engine_reference | 20.0 | 20.0, 22.5 | 2.00× | 2.50× | 99.9500% |" in text
    assert "ran 2 times" in text
    assert "not available: error: x" in text and "29.200 (dense)" in text
    assert "| goal | unstructured 0.5 | 2:4 |" in text and "n/a (sequential not available)" in text
    rows = [line for line in text.splitlines() if line.startswith("| unstructured") or line.startswith("| 2:4")]
    assert len({line.count("|") for line in rows}) == 1  # every row has the header's column count

    def depth(n):
        return {"floor": _side("floor", 1.0 * n, 500 + 45 * n), "engine_reference": _side("engine_reference", 2.0 * n, 600),
                "restatement": _side("restatement", 5.0 * n, 500 + 45 * n)}

    scaling = ScalingResult(
        by_depth={8: depth(8), 32: depth(32)},
        facts={8: {"params": 1e8, "bytes": 8 * 45 * 2**20, "shards": ["a", "b"]},
               32: {"params": 4e8, "bytes": 32 * 45 * 2**20, "shards": ["a", "b", "c"]}},
        shape=dict(hidden=1024, heads=16, kv_heads=4, intermediate=2816, vocab=32000), shard_size="200MB",
        nsamples=8, seqlen=256, batch_size=8, has_no_stream=True, commands=[], measured="now",
    )
    text = render.render_scaling(scaling, baseline_rss=None)
    assert "one block = 45.0 MB" in text
    assert "| engine_reference | 600 | 600 | +0 MB (1.00×) | +0.0 |" in text
    assert "| restatement | 860 | 1940 | +1080 MB (2.26×) | +45.0 |" in text
    assert "| engine_reference | 16.0 | 2.00× | 2.50× | 1.0 | 64.0 | 2.00× | 2.50× | 1.0 |" in text
    assert "GGUF sources" not in text  # not measured: no table

    def conversion(n):
        convert, whole = _side("gguf_convert", 0.0, 420), _side("gguf_whole", 0.0, 400 + 40 * n)
        convert.info, whole.info = {"seconds": 1.5 * n}, {"seconds": 1.0 * n}
        return {"gguf_convert": convert, "gguf_whole": whole}

    scaling.conversions = {8: conversion(8), 32: conversion(32)}
    scaling.gguf_facts = {8: {"params": 1e8, "bytes": 110 * 2**20}, 32: {"params": 4e8, "bytes": 440 * 2**20}}
    text = render.render_scaling(scaling, baseline_rss=None)
    assert "- 32 blocks: 400M parameters, GGUF file 440 MB" in text
    assert "| gguf_convert | 12.0 | 420 | 48.0 | 420 | +0 MB (1.00×) |" in text
    assert "| gguf_whole | 8.0 | 720 | 32.0 | 1680 | +960 MB (2.33×) |" in text


def test_compose_keeps_intro_and_sections_written_atomically(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    document.write_atomic(out, document.compose(document.DEFAULT_INTRO, "## This run", {"e2e": "## E2E\n\ntable one"}))
    text = out.read_text()
    assert "docs/allocation.md" in text and "Not generated yet: run `python -m benchmarks --only scaling`" in text
    edited = text.replace("How to read the tables:", "How to read the tables (edited by hand):")
    out.write_text(edited)
    intro, sections = document.existing_parts(out)
    assert "edited by hand" in intro and sections["e2e"] == "## E2E\n\ntable one"
    sections["kernels"] = "## Kernels\n\nnew"
    document.write_atomic(out, document.compose(intro, "## This run", sections))
    again_intro, again = document.existing_parts(out)
    assert again_intro == intro and again["e2e"] == "## E2E\n\ntable one" and again["kernels"] == "## Kernels\n\nnew"
    assert [p.name for p in tmp_path.iterdir()] == ["BENCHMARKS.md"]  # no temp file left behind


def test_run_child_reports_its_own_peak_rss(tmp_path):
    child = runner.run_child([sys.executable, "-c", "b = bytearray(64 * 2**20); b[::4096] = b'x' * len(b[::4096])"],
                            tmp_path / "log.txt", timeout_s=60)
    assert child.rc == 0 and child.peak_rss_mb >= 64
    failing = runner.run_child([sys.executable, "-c", "import sys; print('error: bad flag', file=sys.stderr); sys.exit(2)"],
                              tmp_path / "log2.txt", timeout_s=60)
    assert failing.rc == 2 and failing.error_line() == "error: bad flag"


def test_render_parallel_goal_and_agreement():
    single, threads, ranks = _side("1x1", 60.0, 700), _side("1x2", 35.0, 700), _side("2x1", 33.0, 700)
    for side, label in ((single, "1 rank × 1 thread"), (threads, "1 rank × 2 threads"), (ranks, "2 ranks × 1 thread")):
        side.label, side.runs_s = label, [side.prune_s]
    result = measure.ParallelResult(
        layouts={"1x1": single, "1x2": threads, "2x1": ranks},
        agreement=[("reference, unstructured 0.5: 2 ranks × 1 thread vs 1 × 1", 1.0, "0 of 10 entries differ")],
        ranks=2, calibration="text", nsamples=32, seqlen=512, batch_size=8, repeats=1, commands=[], measured="now",
    )
    text = render.render_parallel(result)
    assert "| 2 ranks × 1 thread | 33.0 | 33.0 | 1.82× | 700 |" in text
    assert "2 ranks × 1 thread ≥ 1.7× faster than 1 rank × 1 thread: pass (1.82×)" in text
    assert "| reference, unstructured 0.5: 2 ranks × 1 thread vs 1 × 1 | 100.0000% | 0 of 10 entries differ |" in text
    ranks.prune_s = 40.0
    assert "**FAIL** (1.50×)" in render.render_parallel(result)


def test_only_parsing():
    assert suite.parse_only("kernels,e2e") == ["e2e", "kernels"]
    assert suite.parse_only(None) == suite.parse_only("") == ["e2e", "scaling", "parallel", "kernels"]
    # argparse turns ArgumentTypeError into a usage error that shows this message
    with pytest.raises(argparse.ArgumentTypeError, match=r"^--only 'e2e,gpu': choose from e2e, scaling, parallel, kernels$"):
        suite.parse_only("e2e,gpu")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^--only ',': choose from"):
        suite.parse_only(",")
