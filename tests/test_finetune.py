"""`cli.py finetune`: the sparsity mask kept through full and LoRA fine-tuning (zero counts of every
pruned linear equal before, after training and after reloading the output), answer-only loss for
templated data, and the refusal to fine-tune on an evaluation file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from wanda_engine.config import FinetuneConfig
from wanda_engine.errors import UserError
from wanda_engine.finetune import run_finetune, zero_counts
from wanda_engine.finetune.sources import Example, FinetuneData
from wanda_engine.finetune.templates import prompt_and_answer
from wanda_engine.finetune.trainer import tokenized
from wanda_engine.testing import tiny_llama, tiny_tokenizer, write_task_files

pytest.importorskip("peft")


@pytest.fixture(scope="module")
def pruned_model_dir(tmp_path_factory) -> str:
    """A tiny model with half of every block linear's weights zeroed (what a pruned model looks like)."""
    path = tmp_path_factory.mktemp("pruned")
    model = tiny_llama("gqa")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for block in model.model.layers:
            for module in block.modules():
                if isinstance(module, torch.nn.Linear):
                    module.weight.mul_((torch.rand(module.weight.shape, generator=generator) > 0.5).float())
    model.save_pretrained(path, safe_serialization=True)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("qa") / "qa.jsonl"
    records = [{"context": f"Box {i} holds {i + 2} red balls.", "question": f"How many balls are in box {i}?",
                "answer": str(i + 2)} for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _config(model: str, dataset: str, output: Path, **changes) -> FinetuneConfig:
    settings = dict(model=model, dataset=dataset, output=str(output), max_steps=3, lr=5e-2, weight_decay=0.1, batch_size=2,
                    seqlen=64, eval_examples=2, eval_every=2, progress=False)
    settings.update(changes)
    return FinetuneConfig(**settings)


def _linear_weights(directory) -> dict[str, torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(directory)
    return {name: p.detach().clone() for name, p in model.named_parameters() if "layers." in name and p.dim() == 2}


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora-merged"])
def test_mask_kept_through_fine_tuning_and_reload(pruned_model_dir, qa_file, tmp_path, lora):
    out = tmp_path / "tuned"
    report = run_finetune(_config(pruned_model_dir, qa_file, out, lora=lora, lora_rank=4), log=lambda _: None)
    before, after = _linear_weights(pruned_model_dir), _linear_weights(out)
    assert report.pruned_linears == len(before) and report.steps == 3
    assert report.zeros_before == report.zeros_after_training == report.zeros_after_reload > 0
    for name, weight in before.items():
        assert torch.equal(after[name] == 0, weight == 0), name  # the same entries are zero, not only as many
    assert any(not torch.equal(after[n], before[n]) for n in before)  # and the kept weights did train
    if lora:  # the merge filled pruned entries; re-applying the mask removed them and says so
        assert report.merged and report.mask_reapplied_norm > 0
        assert report.ppl_merged_before_mask > 0 and report.ppl_merged_after_mask > 0
    saved = json.loads((out / "finetune.json").read_text())
    assert saved["zeros_after_reload"] == report.zeros_before
    assert (out / "training_curve.png").is_file() and json.loads((out / "training_curve.json").read_text())
    assert not (out / "trainer").exists()


def test_lora_adapter_kept_unmerged(pruned_model_dir, qa_file, tmp_path):
    out = tmp_path / "adapter"
    report = run_finetune(_config(pruned_model_dir, qa_file, out, lora=True, keep_adapter=True), log=lambda _: None)
    assert (out / "adapter_config.json").is_file() and not report.merged
    assert report.zeros_before == report.zeros_after_reload


def test_zero_counts_follow_the_pruned_entries(pruned_model_dir):
    model = AutoModelForCausalLM.from_pretrained(pruned_model_dir)
    counts = zero_counts(model)
    assert set(counts) == {f"{i}.{n}" for i in range(len(model.model.layers))
                           for n in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}


def test_templated_data_has_loss_on_the_answer_only():
    tokenizer = tiny_tokenizer()
    example = Example("Box 1 holds 3 balls.", "How many balls?", "3")
    for template in ("qa", "alpaca"):
        (item,) = tokenized(FinetuneData([example], None, "test"), template, tokenizer, seqlen=256)
        prompt, answer = prompt_and_answer(template, example)
        prompt_length = len(tokenizer(prompt).input_ids)
        assert item["labels"][:prompt_length] == [-100] * prompt_length
        answer_ids = item["labels"][prompt_length:]
        assert -100 not in answer_ids and answer_ids == item["input_ids"][prompt_length:]
        assert tokenizer.decode(answer_ids) == answer + tokenizer.eos_token
    assert prompt_and_answer("qa", example)[0] == "Context: Box 1 holds 3 balls.\nQuestion: How many balls?\nAnswer:"
    assert prompt_and_answer("alpaca", example)[0] == ("### Instruction:\nHow many balls?\n\n### Input:\nBox 1 holds 3 balls."
                                                       "\n\n### Response:\n")
    # plain: windows of running text, every token a label
    items = tokenized(FinetuneData(None, "word " * 200, "text"), "plain", tokenizer, seqlen=16)
    assert items and all(i["labels"] == i["input_ids"] and len(i["input_ids"]) == 16 for i in items)


def test_fine_tuning_on_an_evaluation_file_is_refused(pruned_model_dir, tmp_path):
    data = write_task_files(tmp_path / "data")
    for dataset in (str(data / "squad" / "dev-v2.0.json"), str(data / "wikitext2" / "wiki.test.raw")):
        with pytest.raises(UserError, match="is the file the evaluation scores"):
            run_finetune(_config(pruned_model_dir, dataset, tmp_path / "out", data_dir=str(data)), log=lambda _: None)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("changes, needle", [
    ({"max_steps": 0}, "--max_steps 0"),
    ({"template": "chat"}, "--template 'chat'"),
    ({"keep_adapter": True}, "--keep_adapter keeps a LoRA adapter"),
    ({"dataset": "nosuch"}, "--dataset 'nosuch'"),
    ({"lr": float("nan")}, "--lr nan"),
])
def test_bad_fine_tuning_input(pruned_model_dir, qa_file, tmp_path, changes, needle):
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        dataset = changes.pop("dataset", qa_file)
        run_finetune(_config(pruned_model_dir, dataset, tmp_path / "out", **changes), log=lambda _: None)
    assert not (tmp_path / "out").exists()
