"""Every architecture README.md's table names, built tiny: what the table says is what the engine does.

Supported ones are pruned streamed and with --no_stream and must agree: the same pruned weights, and
the same dense and pruned perplexity (streamed evaluation makes its logits through the model's own
forward, so Gemma 2's final logit soft-capping, for one, is applied). The others are refused by name
before any work, with either schedule and either loading mode.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from model_helpers import ARCHITECTURES, save_tiny_architecture, tiny_architecture, tiny_run_config
from wanda_engine.api import PruneConfig, run_prune
from wanda_engine.errors import UserError
from wanda_engine.eval import perplexity

REPO = Path(__file__).resolve().parents[1]
SUPPORTED = sorted(key for key, (*_, outcome) in ARCHITECTURES.items() if outcome != "refused")
REFUSED = sorted(key for key, (*_, outcome) in ARCHITECTURES.items() if outcome == "refused")


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("architectures")
    return {key: save_tiny_architecture(key, root / key) for key in ARCHITECTURES}


def _config(model_dir: str, text_file: str, tmp_path: Path, **overrides) -> PruneConfig:
    return tiny_run_config(model_dir, text_file, tmp_path, **{"nsamples": 4, "batch_size": 2, "eval_limit": 3, **overrides})


@pytest.mark.parametrize("key", SUPPORTED)
def test_streamed_and_whole_model_agree(key, model_dirs, calibration_text_file, tmp_path):
    schedules = ["reference", "sequential"] if ARCHITECTURES[key][3] == "both" else ["reference"]
    for schedule in schedules:
        reports = {}
        for mode, stream in (("streamed", True), ("whole", False)):
            reports[mode] = run_prune(
                _config(model_dirs[key], calibration_text_file, tmp_path, stream=stream, schedule=schedule,
                        save_model=str(tmp_path / f"{schedule}-{mode}")),
                log=lambda *_: None,
            )
        streamed = AutoModelForCausalLM.from_pretrained(tmp_path / f"{schedule}-streamed").state_dict()
        whole = AutoModelForCausalLM.from_pretrained(tmp_path / f"{schedule}-whole").state_dict()
        assert streamed.keys() == whole.keys()
        for name, tensor in whole.items():
            assert torch.equal(streamed[name], tensor), (key, schedule, name)
        for field in ("ppl_dense", "ppl_pruned"):
            assert getattr(reports["streamed"], field) == pytest.approx(getattr(reports["whole"], field), rel=1e-5), (key, schedule, field)
        assert reports["streamed"].actual_sparsity == reports["whole"].actual_sparsity == pytest.approx(0.5, abs=1e-3)
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "partial, temp or lock files left"


@pytest.mark.parametrize("key", SUPPORTED)
def test_streamed_dense_perplexity_is_the_models_own(key, model_dirs, calibration_text_file, tmp_path):
    """The streamed dense perplexity against the model's own forward on the same windows (the whole-model
    run's evaluation is that forward too, but this needs no pruning run to agree with)."""
    report = run_prune(_config(model_dirs[key], calibration_text_file, tmp_path, prune_method="magnitude"),
                       log=lambda *_: None)
    model = AutoModelForCausalLM.from_pretrained(model_dirs[key]).eval()
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(model_dirs[key])(Path(calibration_text_file).read_text(), return_tensors="pt").input_ids[0]
    expected, windows = perplexity(model, ids, 32, limit=3, progress=False)
    assert report.streamed and report.eval_windows == windows
    assert report.ppl_dense == pytest.approx(expected, rel=1e-5)


def test_gemma2_logit_softcapping_is_applied_in_streamed_evaluation(model_dirs, calibration_text_file, tmp_path):
    model = tiny_architecture("gemma2")
    assert model.config.final_logit_softcapping  # what a norm + head re-implementation skipped
    test_streamed_dense_perplexity_is_the_models_own("gemma2", model_dirs, calibration_text_file, tmp_path)


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("key", REFUSED)
def test_unsupported_architectures_are_refused_before_any_work(key, stream, model_dirs, calibration_text_file, tmp_path):
    logged = []
    with pytest.raises(UserError) as refused:
        run_prune(_config(model_dirs[key], calibration_text_file, tmp_path, stream=stream, save=str(tmp_path / "r"),
                          save_model=str(tmp_path / "m")), log=logged.append)
    message = str(refused.value)
    assert "\n" not in message and "not supported" in message
    assert not any("perplexity" in line or "calibration data" in line for line in logged), "work done before refusing"
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == [], "outputs, partial or lock files written"


def test_refusal_names_the_modules_their_type_and_what_is_needed(model_dirs, calibration_text_file, tmp_path):
    with pytest.raises(UserError) as moe:
        run_prune(_config(model_dirs["mixtral"], calibration_text_file, tmp_path, stream=False), log=lambda *_: None)
    assert "model.layers.*.mlp.experts.gate_up_proj" in str(moe.value) and "MixtralExperts" in str(moe.value)
    assert "per expert" in str(moe.value) and "model.layers.*.mlp.gate.weight" in str(moe.value)
    with pytest.raises(UserError) as gpt2:
        run_prune(_config(model_dirs["gpt2"], calibration_text_file, tmp_path, stream=False), log=lambda *_: None)
    assert "transformer.h.*.attn.c_attn.weight" in str(gpt2.value) and "Conv1D" in str(gpt2.value)
    assert "transposed" in str(gpt2.value)


@pytest.mark.parametrize("key", sorted(k for k in SUPPORTED if ARCHITECTURES[k][3] == "reference"))
def test_sequential_refused_before_any_work(key, model_dirs, calibration_text_file, tmp_path):
    logged = []
    with pytest.raises(UserError, match="--schedule sequential does not support"):
        run_prune(_config(model_dirs[key], calibration_text_file, tmp_path, stream=False, schedule="sequential"),
                  log=logged.append)
    assert not any("perplexity" in line for line in logged), "the dense model was evaluated before refusing"


def test_qwen2_with_sliding_layers_is_refused_beyond_its_window(calibration_text_file, tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from model_helpers import tiny_tokenizer

    config = Qwen2Config(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=256, use_sliding_window=True, sliding_window=16,
                         max_window_layers=1, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "qwen2")
    tiny_tokenizer().save_pretrained(tmp_path / "qwen2")
    with pytest.raises(UserError, match="--seqlen 32: .*16-token sliding window"):
        run_prune(_config(str(tmp_path / "qwen2"), calibration_text_file, tmp_path), log=lambda *_: None)
    report = run_prune(_config(str(tmp_path / "qwen2"), calibration_text_file, tmp_path, seqlen=16), log=lambda *_: None)
    assert report.actual_sparsity == pytest.approx(0.5, abs=1e-3)


def _readme_table() -> dict[str, dict[str, str]]:
    """README.md's Architectures table: transformers class → column → cell."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Architectures", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    table: dict[str, dict[str, str]] = {}
    for row in rows[2:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        for class_name in re.findall(r"`(\w+(?:ForCausalLM|LMHeadModel))`", cells[0]):
            table[class_name] = dict(zip(header, cells))
    return table


def test_readme_architecture_table_matches_these_tests():
    table = _readme_table()
    built = {model_class for model_class, *_ in ARCHITECTURES.values()}
    assert set(table) == built, "README table and tests/model_helpers.ARCHITECTURES name different classes"
    expected_cells = {"both": ("yes", "yes"), "reference": ("yes", "refused"), "refused": ("refused", "refused")}
    for model_class, _config_class, _overrides, outcome in ARCHITECTURES.values():
        row = table[model_class]
        reference, sequential = expected_cells[outcome]
        assert row["`reference`"].startswith(reference), (model_class, row)
        assert row["`sequential`"].startswith(sequential), (model_class, row)
        assert row["streamed"].startswith("yes" if outcome != "refused" else "—"), (model_class, row)
