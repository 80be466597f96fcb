"""`cli.py prune` end to end on tiny models, and every bad input: exit code 2, one line, nothing written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import cli
from model_helpers import text_perplexity

REPO = Path(__file__).resolve().parents[1]


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def base_args(model_dir: str, text_file: str, tmp_path: Path) -> list[str]:
    return [
        "prune", "--model", model_dir, "--calibration_dataset", text_file, "--eval", text_file,
        "--nsamples", "4", "--seqlen", "32", "--batch_size", "2", "--eval_limit", "3", "--no_progress",
        "--cache_dir", str(tmp_path / "cache"),
    ]


def test_prune_tiny_model_writes_report_and_model(tiny_model_dir, calibration_text_file, tmp_path, capsys):
    save, save_model = tmp_path / "report", tmp_path / "pruned"
    argv = base_args(tiny_model_dir, calibration_text_file, tmp_path) + ["--save", str(save), "--save_model", str(save_model)]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    report = json.loads((save / "report.json").read_text())
    for key in ("model", "prune_method", "sparsity_type", "sparsity_ratio", "actual_sparsity", "per_layer", "ppl_dense",
                "ppl_pruned", "nsamples", "seqlen", "seed", "calibration_dataset", "device", "dtype", "timings", "peak_rss_mb"):
        assert key in report, key
    assert set(report["timings"]) >= {"load_s", "calibration_s", "prune_s", "eval_s", "total_s"}
    assert report["actual_sparsity"] == pytest.approx(0.5, abs=1e-3)
    # the reported perplexities are those of the models on disk: the given one, and the one it saved
    assert report["ppl_dense"] == pytest.approx(text_perplexity(tiny_model_dir, calibration_text_file, 32, 3), rel=1e-5)
    assert report["ppl_pruned"] == pytest.approx(text_perplexity(save_model, calibration_text_file, 32, 3), rel=1e-5)
    assert (save / "report.md").read_text().startswith("# Pruning report")
    reloaded = AutoModelForCausalLM.from_pretrained(save_model)
    zeros = sum(int((p == 0).sum()) for n, p in reloaded.named_parameters() if "layers" in n and p.dim() == 2)
    total = sum(p.numel() for n, p in reloaded.named_parameters() if "layers" in n and p.dim() == 2)
    assert zeros / total == pytest.approx(report["actual_sparsity"], abs=1e-6)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp dirs left behind"
    # What a streamed run holds beside the baseline (the benchmarks' memory budget), in MiB of fp32.
    block = reloaded.model.layers[0]
    hidden = reloaded.config.hidden_size
    assert report["memory"] == pytest.approx({
        "block_weights_mb": sum(p.numel() for p in block.parameters()) * 4 / 2**20,
        "embeddings_mb": reloaded.get_input_embeddings().weight.numel() * 4 / 2**20,
        "lm_head_mb": reloaded.get_output_embeddings().weight.numel() * 4 / 2**20,  # untied in the tiny model
        "hidden_states_mb": (4 + 2 * 3) * 32 * hidden * 4 / 2**20,  # calibration + eval windows (dense and pruned)
    })


def test_existing_output_refused_then_overwritten(tiny_model_dir, calibration_text_file, tmp_path, capsys):
    save = tmp_path / "report"
    save.mkdir()
    (save / "keep.txt").write_text("x")
    argv = base_args(tiny_model_dir, calibration_text_file, tmp_path) + ["--save", str(save), "--eval", "none"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "--overwrite" in err and (save / "keep.txt").exists()
    code, _, err = run_cli(argv + ["--overwrite"], capsys)
    assert code == 0, err
    assert (save / "report.json").exists() and not (save / "keep.txt").exists()


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--sparsity_ratio", "1.0"], "--sparsity_ratio"),
        (["--sparsity_ratio", "-0.1"], "--sparsity_ratio"),
        (["--sparsity_type", "4:2"], "4:2"),
        (["--sparsity_type", "2:2"], "2:2"),
        (["--sparsity_type", "3:7"], "not a multiple of 7"),
        (["--sparsity_type", "2-4"], "2-4"),
        (["--sparsity_type", "2:4", "--sparsity_ratio", "0.6"], "0.6"),
        (["--nsamples", "0"], "--nsamples"),
        (["--prune_method", "sparsegpt"], "sparsegpt"),
        (["--calibration_dataset", "no_such_dataset"], "no_such_dataset"),
        (["--seqlen", "100000"], "--seqlen"),
        (["--sparsity_allocation", "nope"], "nope"),
        (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "bogus"], "--device"),
        (["--device", "meta"], "--device 'meta'"),
        (["--checkpoint_every", "nan"], "--checkpoint_every nan"),
        (["--dist_timeout", "0"], "--dist_timeout 0"),
        (["--prune_method", "wanda_variant"], "--use_variant"),
        (["--dtype", "float8"], "float8"),
        (["--schedule", "fast"], "--schedule 'fast'"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(extra, needle, tiny_model_dir, calibration_text_file, tmp_path, capsys):
    save, save_model = tmp_path / "report", tmp_path / "pruned"
    argv = base_args(tiny_model_dir, calibration_text_file, tmp_path) + ["--save", str(save), "--save_model", str(save_model)] + extra
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err
    assert not save.exists() and not save_model.exists()


_LARGE_TENSOR_ALIGNMENT = """
import sys, cli, torch
cli.main(sys.argv[1:])  # sets the variable before torch's first allocation (the run itself is refused)
tensor = torch.empty(8 << 20, dtype=torch.uint8)
print(tensor.data_ptr() % 4096)
"""


@pytest.mark.slow
@pytest.mark.parametrize("preset, huge_pages", [(None, True), ("0", False)])
def test_cli_turns_on_torch_huge_page_allocation_unless_set(preset, huge_pages, tmp_path):
    """What the variable does: torch allocates large tensors on their own page-aligned memory advised
    for huge pages (without it: 64-byte aligned heap memory), which keeps the heap from fragmenting; a
    value the user set wins. In a fresh process, as `python cli.py`."""
    environment = {key: value for key, value in os.environ.items() if key != "THP_MEM_ALLOC_ENABLE"}
    if preset is not None:
        environment["THP_MEM_ALLOC_ENABLE"] = preset
    result = subprocess.run([sys.executable, "-c", _LARGE_TENSOR_ALIGNMENT, "prune", "--sparsity_ratio", "1.0"],
                            cwd=REPO, capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (int(result.stdout.split()[-1]) == 0) is huge_pages


def test_text_template_reads_shell_escapes():
    args = cli.build_parser().parse_args(["prune", "--text_template", r"Context: {context}\nQuestion: {question}\t\\n"])
    assert args.text_template == "Context: {context}\nQuestion: {question}\t\\n"


def test_seqlen_longer_than_corpus(tiny_model_dir, tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("only a few words here")
    argv = base_args(tiny_model_dir, str(short), tmp_path) + ["--save", str(tmp_path / "r")]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "--seqlen" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_unknown_model_path_subprocess(tmp_path):
    """The real process: exit code 2, a single stderr line, no traceback."""
    result = subprocess.run(
        [sys.executable, "cli.py", "prune", "--model", str(tmp_path / "missing_model"), "--save", str(tmp_path / "r")],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "missing_model" in result.stderr
    assert not (tmp_path / "r").exists()


def test_help_states_each_default_once():
    text = cli.build_parser()._subparsers._group_actions[0].choices["prune"].format_help()
    flat = " ".join(text.split())
    assert "(default: None)" not in flat and "(default: False)" not in flat
    assert "(default: embedded SmolLM2-135M-Instruct)" in flat and "(default: 0)" in flat  # --model; --seed


def _subprocess_cli(args: list[str], **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", **env}
    environment = {key: value for key, value in environment.items() if value is not None}
    return subprocess.run([sys.executable, "cli.py", *args], cwd=REPO, capture_output=True, text=True, env=environment,
                          timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_binary_record_file_is_one_line_on_stderr(suffix, tiny_model_dir, tmp_path):
    data = tmp_path / f"records{suffix}"
    data.write_bytes(bytes(range(256)) * 64)
    result = _subprocess_cli(["prune", "--model", tiny_model_dir, "--calibration_dataset", str(data), "--text_field", "text",
                              "--nsamples", "2", "--seqlen", "16", "--eval", "none", "--no_progress"])
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and str(data) in result.stderr, result.stderr


@pytest.mark.slow
def test_unreachable_hub_fails_at_once_in_one_line(tmp_path):
    """Without the hub (here: an endpoint that refuses connections) a hub id is looked up in the cache
    only; the hub client itself would retry for about 25 s and print a line per retry."""
    started = time.monotonic()
    result = _subprocess_cli(["prune", "--model", "someone/some-model", "--cache_dir", str(tmp_path / "cache"),
                              "--save", str(tmp_path / "r")], HF_HUB_OFFLINE=None, HF_DATASETS_OFFLINE=None,
                             HF_ENDPOINT="http://127.0.0.1:9")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "not in the local cache" in result.stderr and "127.0.0.1 unreachable" in result.stderr
    assert time.monotonic() - started < 20 and not (tmp_path / "r").exists()


@pytest.mark.slow
def test_unreachable_hub_still_loads_a_cached_hub_model(tiny_model_dir, calibration_text_file, tmp_path):
    """A hub id already in the cache (huggingface_hub's layout) is used as it is when the hub cannot be reached."""
    snapshot = tmp_path / "cache" / "hub" / "models--someone--tiny" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_model_dir, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    result = _subprocess_cli(base_args("someone/tiny", calibration_text_file, tmp_path), HF_HUB_OFFLINE=None,
                             HF_DATASETS_OFFLINE=None, HF_ENDPOINT="http://127.0.0.1:9")
    assert result.returncode == 0, result.stderr
    assert "pruned perplexity" in result.stdout


@pytest.mark.slow
def test_wanda_engine_console_script_is_the_cli(tmp_path):
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"wanda-engine": "cli:main"}
    script = shutil.which("wanda-engine", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("wanda-engine is not installed beside this Python (pip install -e .)")
    result = subprocess.run([script, "prune", "--dtype", "float8"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: argument --dtype") and "wanda-engine prune --help" in result.stderr
    listed = subprocess.run([script, "cache", "--cache_dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "no GGUF conversions" in listed.stdout
