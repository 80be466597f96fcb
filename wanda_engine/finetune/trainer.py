"""`python cli.py finetune`: recovery fine-tuning of a pruned model with transformers' Trainer (peft
for --lora), its sparsity mask kept and checked (zero counts of every pruned linear equal before
training, after training and after reloading the output)."""

from __future__ import annotations

import copy
import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import FinetuneConfig
from ..data.files import check_data_dir
from ..errors import UserError
from ..eval.tasks import evaluation_files
from ..models import load_model
from ..outputs import OutputDir, atomic_output_dir
from ..plan import resolve_device
from ..report.plot import plot_training_curve
from .mask import KeepMask, SparsityMask, zero_counts
from .sources import FinetuneData, load_finetune_data
from .templates import TEMPLATES, plain_text, prompt_and_answer

Log = Callable[[str], None]
REPORT = "finetune.json"
CURVE_JSON, CURVE_PNG = "training_curve.json", "training_curve.png"


@dataclass
class FinetuneReport:
    model: str = ""
    output: str = ""
    dataset: str = ""
    data_source: str = ""
    data_files: list[str] = field(default_factory=list)
    evaluation_files_avoided: list[str] = field(default_factory=list)
    template: str = ""
    train_examples: int = 0
    eval_examples: int = 0
    lora: bool = False
    merged: bool = False
    steps: int = 0
    eval_loss_before: float | None = None
    eval_loss_after: float | None = None
    # --lora merged: what re-applying the mask after the merge removed, and the held-out perplexity around it
    mask_reapplied_norm: float | None = None
    ppl_merged_before_mask: float | None = None
    ppl_merged_after_mask: float | None = None
    pruned_linears: int = 0
    zeros_before: int = 0
    zeros_after_training: int = 0
    zeros_after_reload: int = 0
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)


def check_config(config: FinetuneConfig) -> str:
    """Every check that needs no model; returns the template."""
    if not config.output:
        raise UserError("--output is required: the directory for the fine-tuned model")
    for flag, value, least in (("--max_steps", config.max_steps, 1), ("--batch_size", config.batch_size, 1),
                               ("--seqlen", config.seqlen, 8), ("--eval_examples", config.eval_examples, 1),
                               ("--lora_rank", config.lora_rank, 1)):
        if value < least:
            raise UserError(f"{flag} {value}: must be at least {least}")
    if not (config.lr > 0 and math.isfinite(config.lr)):
        raise UserError(f"--lr {config.lr}: must be a positive number, e.g. 1e-4")
    if config.weight_decay < 0:
        raise UserError(f"--weight_decay {config.weight_decay}: must be 0 or more")
    if config.template is not None and config.template not in TEMPLATES:
        raise UserError(f"--template {config.template!r}: choose one of {', '.join(TEMPLATES)}")
    if config.keep_adapter and not config.lora:
        raise UserError("--keep_adapter keeps a LoRA adapter unmerged; add --lora or drop --keep_adapter")
    check_data_dir(config.data_dir)
    return config.template or ""


def check_no_overlap(data: FinetuneData, data_dir: str | None, extra_eval_files: list[str] = ()) -> list[str]:
    """Refuse fine-tuning on a file the tasks score; returns the evaluation files checked against."""
    scored = [*evaluation_files(data_dir), *extra_eval_files]
    for path in data.files:
        for other in scored:
            if Path(path).resolve() == Path(other).resolve():
                raise UserError(f"--dataset {path!r}: is the file the evaluation scores ({other}); fine-tune on a train "
                                "split (e.g. squad/train-v2.0.json, gsm8k/train.jsonl) instead")
    return scored


def tokenized(data: FinetuneData, template: str, tokenizer, seqlen: int) -> list[dict[str, list[int]]]:
    """Training items: templated records → prompt labels -100, answer (and EOS) labels kept, the prompt
    cut from the left when too long; running text (or plain records) → seqlen windows, every token a label."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if template == "plain":
        text = data.text if data.text is not None else "\n\n".join(plain_text(e) for e in data.examples)
        ids = tokenizer(text).input_ids
        windows = [ids[i:i + seqlen] for i in range(0, len(ids) - seqlen + 1, seqlen)]
        return [{"input_ids": w, "attention_mask": [1] * len(w), "labels": list(w)} for w in windows]
    items = []
    for example in data.examples:
        prompt, answer = prompt_and_answer(template, example)
        prompt_ids = tokenizer(prompt).input_ids
        answer_ids = tokenizer(answer, add_special_tokens=False).input_ids + eos
        ids, labels = (prompt_ids + answer_ids)[-seqlen:], ([-100] * len(prompt_ids) + answer_ids)[-seqlen:]
        items.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return items


def run_finetune(config: FinetuneConfig, log: Log = print) -> FinetuneReport:
    started = time.perf_counter()
    template = check_config(config)
    device = resolve_device(config.device)
    if device.startswith("cuda:") and device != "cuda:0":
        raise UserError(f"--device {device}: the Trainer runs on the first visible GPU; pass --device cuda with "
                        f"CUDA_VISIBLE_DEVICES={device.split(':')[1]}")
    data = load_finetune_data(config.dataset, config.data_dir)
    template = template or ("plain" if data.examples is None else "qa")
    if data.examples is None and template != "plain":
        raise UserError(f"--template {template}: {config.dataset} is running text; use --template plain")
    avoided = check_no_overlap(data, config.data_dir)
    output = OutputDir(config.output, "--output", config.overwrite)
    note = output.claim()
    if note:
        log(f"note: {note}")
    loaded = None
    try:
        random.seed(config.seed)
        torch.manual_seed(config.seed)
        loaded = load_model(config.model, dtype="float32", device=device, cache_dir=config.cache_dir,
                            trust_remote_code=config.trust_remote_code, stream=False, log=log, progress=config.progress)
        log(f"model: {loaded.name} ({loaded.source}); fine-tuning data: {data.source}; template {template}")
        items = tokenized(data, template, loaded.tokenizer, config.seqlen)
        if len(items) < 2:
            raise UserError(f"--dataset {config.dataset}: {len(items)} training item(s) at --seqlen {config.seqlen}; "
                            "use more data or a smaller --seqlen")
        held_out = min(config.eval_examples, max(1, len(items) // 10))
        train_items, eval_items = items[:-held_out], items[-held_out:]
        report = FinetuneReport(
            model=loaded.name, output=str(output.target), dataset=config.dataset, data_source=data.source,
            data_files=data.files, evaluation_files_avoided=avoided, template=template, train_examples=len(train_items),
            eval_examples=len(eval_items), lora=config.lora, merged=config.lora and not config.keep_adapter,
            config=asdict(config),
        )
        _train(config, loaded, train_items, eval_items, report, output.target, log, started)
        log(f"fine-tuned for {report.steps} steps: held-out loss {report.eval_loss_before:.4f} → {report.eval_loss_after:.4f}; "
            f"pruned zeros kept in {report.pruned_linears} linears ({report.zeros_before:,} before = after = after reload); "
            f"saved to {output.target}")
        return report
    finally:
        if loaded is not None:
            loaded.close()
        output.release()


def _train(config: FinetuneConfig, loaded, train_items, eval_items, report: FinetuneReport, target: Path, log: Log,
           started: float) -> None:
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    model, tokenizer = loaded.model, copy.deepcopy(loaded.tokenizer)
    if tokenizer.pad_token_id is None:  # the collator pads; labels of padding are -100 anyway
        tokenizer.pad_token = tokenizer.eos_token
    model.config.use_cache = False
    mask = SparsityMask(model)
    before = zero_counts(model)
    report.pruned_linears, report.zeros_before = mask.pruned_linears, sum(before[n] for n in mask.masks)
    if not mask.pruned_linears:
        log("note: no block linear of this model has a zero weight: there is no sparsity mask to keep (a dense model?)")
    if config.lora:
        model = _with_lora(model, config)
    collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True)
    eval_every = config.eval_every or max(1, config.max_steps // 5)
    with atomic_output_dir(target) as tmp:
        args = TrainingArguments(
            output_dir=str(tmp / "trainer"), max_steps=config.max_steps, learning_rate=config.lr,
            weight_decay=config.weight_decay, per_device_train_batch_size=config.batch_size,
            per_device_eval_batch_size=config.batch_size, eval_strategy="steps", eval_steps=eval_every,
            logging_steps=max(1, min(10, eval_every)), save_strategy="no", report_to="none", seed=config.seed,
            use_cpu=loaded.device == "cpu", disable_tqdm=not config.progress, remove_unused_columns=False,
            dataloader_num_workers=0, optim="adamw_torch",
        )
        trainer = Trainer(model=model, args=args, data_collator=collator, train_dataset=Dataset.from_list(train_items),
                          eval_dataset=Dataset.from_list(eval_items), callbacks=[KeepMask(mask)])
        _loss_on_progress_bar(trainer)
        mask.attach(model)
        report.eval_loss_before = float(trainer.evaluate()["eval_loss"])
        trainer.train()
        mask.detach()
        report.steps = int(trainer.state.global_step)
        report.eval_loss_after = float(trainer.evaluate()["eval_loss"])
        history = [entry for entry in trainer.state.log_history if "loss" in entry or "eval_loss" in entry]
        model = trainer.model
        if config.lora and not config.keep_adapter:
            model = model.merge_and_unload()
            report.ppl_merged_before_mask = math.exp(_eval_loss(trainer, model))
            report.mask_reapplied_norm = mask.apply(model, measure=True)
            report.ppl_merged_after_mask = math.exp(_eval_loss(trainer, model))
            log(f"LoRA merged; re-applying the mask removed a weight norm of {report.mask_reapplied_norm:.4g}: held-out "
                f"perplexity {report.ppl_merged_before_mask:.3f} → {report.ppl_merged_after_mask:.3f}")
        after = zero_counts(model)
        report.zeros_after_training = sum(after[n] for n in mask.masks)
        _check_zeros("after training", before, after, mask)
        shutil.rmtree(tmp / "trainer", ignore_errors=True)  # the Trainer's scratch directory
        model.save_pretrained(tmp, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp)
        reloaded = _reload(tmp, config)
        reload_counts = zero_counts(reloaded)
        report.zeros_after_reload = sum(reload_counts[n] for n in mask.masks)
        _check_zeros("after reloading the output", before, reload_counts, mask)
        (tmp / CURVE_JSON).write_text(json.dumps(history, indent=2) + "\n")
        plot_training_curve(history, tmp / CURVE_PNG, title=f"{report.dataset} ({report.template}"
                            f"{', LoRA' if config.lora else ''})")
        report.seconds = time.perf_counter() - started
        (tmp / REPORT).write_text(json.dumps(asdict(report), indent=2) + "\n")


def _with_lora(model, config: FinetuneConfig):
    from peft import LoraConfig, get_peft_model

    from ..models.blocks import decoder_blocks, linear_layers

    targets = sorted({name.rsplit(".", 1)[-1] for name in linear_layers(decoder_blocks(model)[0])})
    return get_peft_model(model, LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                                            target_modules=targets, task_type="CAUSAL_LM"))


@torch.no_grad()
def _eval_loss(trainer, model) -> float:
    """Token-weighted mean loss of `model` on the trainer's held-out items."""
    model.eval()
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for batch in trainer.get_eval_dataloader():
        batch = {k: v.to(device) for k, v in batch.items()}
        tokens = int((batch["labels"][:, 1:] != -100).sum())
        total += float(model(**batch).loss) * tokens
        count += tokens
    return total / max(count, 1)


def _check_zeros(when: str, before: dict[str, int], now: dict[str, int], mask: SparsityMask) -> None:
    changed = [name for name in mask.masks if now.get(name) != before[name]]
    if changed:
        raise RuntimeError(f"sparsity mask not kept {when}: zero counts changed in {len(changed)} linears, e.g. {changed[0]} "
                           f"({before[changed[0]]} → {now.get(changed[0])})")


def _reload(directory: Path, config: FinetuneConfig):
    from transformers import AutoModelForCausalLM

    if config.lora and config.keep_adapter:
        from peft import AutoPeftModelForCausalLM

        return AutoPeftModelForCausalLM.from_pretrained(str(directory))
    return AutoModelForCausalLM.from_pretrained(str(directory), trust_remote_code=config.trust_remote_code)


def _loss_on_progress_bar(trainer) -> None:
    """The training progress bar shows the latest loss instead of printing each log line."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class LossOnBar(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.training_bar is not None and logs:
                shown = {k: f"{v:.4f}" for k, v in logs.items() if k in ("loss", "eval_loss")}
                if shown:
                    self.training_bar.set_postfix(shown)

    if trainer.args.disable_tqdm:
        trainer.remove_callback(PrinterCallback)
        return
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(LossOnBar())
