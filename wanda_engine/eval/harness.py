"""Task scores of an in-memory model: lm-evaluation-harness in-process (its HF wrapper around the
already-loaded model, `simple_evaluate` one task at a time so each is timed), and the engine's own
perplexity for the perplexity tasks."""

from __future__ import annotations

import copy
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ..errors import UserError
from ..report.types import TaskResult
from ..versions import software_versions
from .perplexity import perplexity, reference_eval_ids
from .tasks import TaskSpec

Log = Callable[[str], None]


@dataclass
class TaskScores:
    results: list[TaskResult]
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # task → one record per example


def check_task_limits(limit: int | None, max_gen_toks: int, limit_flag: str = "--limit") -> None:
    """The task-only settings (--batch_size and --seqlen: plan.check_seqlen_and_batch)."""
    if max_gen_toks < 1:
        raise UserError(f"--max_gen_toks {max_gen_toks}: must be at least 1, e.g. 256")
    if limit is not None and limit < 1:
        raise UserError(f"{limit_flag} {limit}: must be at least 1 (the first N examples of each task)")


def check_fits_context(tasks: list[TaskSpec], seqlen: int, max_gen_toks: int, context: int) -> None:
    """The perplexity window and the generation budget against the model's context."""
    if seqlen > context and any(task.kind == "perplexity" for task in tasks):
        raise UserError(f"--seqlen {seqlen}: longer than the model's context ({context}); pass a smaller --seqlen")
    generates = [task for task in tasks if task.kind == "lm_eval" and (
        task.lm_eval_config is None or task.lm_eval_config.get("output_type") == "generate_until")]  # upstream: may
    if max_gen_toks >= context and generates:
        raise UserError(f"--max_gen_toks {max_gen_toks}: leaves no room for a prompt in the model's context ({context}); "
                        f"pass --max_gen_toks {context // 4} or less")


def score_tasks(model: torch.nn.Module, tokenizer, tasks: list[TaskSpec], *, limit: int | None = None,
                batch_size: int = 8, seqlen: int = 2048, max_gen_toks: int = 256, progress: bool = True, label: str = "",
                log: Log = print) -> TaskScores:
    """Score `model` on each task (the first `limit` examples, or windows for perplexity, of each).

    The global random generators are restored afterwards: lm-eval reseeds them, and a pruning run
    that evaluates its dense model first must sample its calibration exactly as without evaluation."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    scores = TaskScores(results=[])
    lm = task_manager = None
    # indexing lm-eval's ~15,000 own tasks takes seconds: only when a task of theirs is asked for
    needs_registry = any(task.upstream for task in tasks)
    try:
        for task in tasks:
            started = time.perf_counter()
            if task.kind == "perplexity":
                result = _perplexity(model, tokenizer, task, limit, batch_size, seqlen, progress, label)
            else:
                if lm is None:
                    lm, task_manager = _harness(model, tokenizer, batch_size, max_gen_toks), _task_manager(needs_registry)
                result, samples = run_lm_eval_task(lm, task, limit=limit, max_gen_toks=max_gen_toks, task_manager=task_manager)
                scores.samples[task.name] = samples
            result.seconds = time.perf_counter() - started
            scores.results.append(result)
            log(f"{label + ' ' if label else ''}{result.summary()}")
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
    return scores


def _perplexity(model, tokenizer, task: TaskSpec, limit, batch_size, seqlen, progress, label) -> TaskResult:
    ids = reference_eval_ids(task.name, tokenizer(task.text, return_tensors="pt").input_ids[0], seqlen)
    ppl, windows = perplexity(model, ids, seqlen, limit=limit, batch_size=batch_size, progress=progress,
                              desc=f"{label + ' ' if label else ''}{task.name} ppl")
    return TaskResult(task=task.name, metrics={"perplexity": ppl}, examples=windows, num_fewshot=None,
                      source=task.source, settings={"seqlen": seqlen, "limit": limit, "unit": "windows"})


def _harness(model, tokenizer, batch_size: int, max_gen_toks: int):
    from lm_eval.models.huggingface import HFLM

    for name in ("lm_eval", "lm-eval"):  # its per-request notices would bury the one line per task
        logging.getLogger(name).setLevel(logging.ERROR)
    # A copy: the wrapper sets a pad token, which must not change a later calibration's padding.
    lm = HFLM(pretrained=model, tokenizer=copy.deepcopy(tokenizer), batch_size=batch_size,
              max_gen_toks=max_gen_toks, device=str(next(model.parameters()).device))
    return lm


def _task_manager(include_defaults: bool):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=include_defaults)


def run_lm_eval_task(lm, task: TaskSpec, *, limit: int | None = None, max_gen_toks: int = 256, task_manager=None
                     ) -> tuple[TaskResult, list[dict[str, Any]]]:
    """One lm-eval task on `lm` (any lm-eval LM) with `simple_evaluate`: its result and one record per
    example (prompt, response, target, per-example metrics)."""
    from lm_eval import simple_evaluate
    from lm_eval.api.task import ConfigurableTask

    from ..data.base import quiet_datasets

    task_manager = task_manager or _task_manager(bool(task.upstream))
    with quiet_datasets():
        job = ConfigurableTask(config=copy.deepcopy(task.lm_eval_config)) if task.lm_eval_config else task.upstream
        output = simple_evaluate(model=lm, tasks=[job], limit=limit, num_fewshot=task.num_fewshot if task.upstream else None,
                                 gen_kwargs={"max_gen_toks": max_gen_toks}, log_samples=True, task_manager=task_manager,
                                 verbosity="ERROR")
    name = next(iter(output["results"]))
    values = output["results"][name]
    metrics, stderr = {}, {}
    for key, value in values.items():
        if "," not in key:
            continue
        metric, filter_name = key.split(",", 1)
        target = stderr if metric.endswith("_stderr") else metrics
        label = metric.removesuffix("_stderr") + ("" if filter_name == "none" else f" ({filter_name})")
        target[label] = float(value) if isinstance(value, (int, float, np.floating)) else None
    samples = [_sample_record(sample) for sample in output.get("samples", {}).get(name, [])]
    config = output.get("configs", {}).get(name, {})
    shots = output.get("n-shot", {}).get(name, task.num_fewshot)
    result = TaskResult(
        task=task.name, metrics=metrics, stderr=stderr, examples=int(output["n-samples"][name]["effective"]),
        num_fewshot=shots, source=task.source,
        prompt=samples[0]["prompt"] if samples else "", response=samples[0]["response"] if samples else "",
        settings={"limit": limit, "output_type": config.get("output_type"),
                  "generation_kwargs": config.get("generation_kwargs"), "lm_eval": software_versions("lm_eval")["lm_eval"]},
    )
    return result, samples


def _sample_record(sample: dict) -> dict[str, Any]:
    """One example as scored: the prompt, the raw generation (or the choices' log-likelihoods), the
    response after the filter (one record per filter where a task has several), target and scores."""
    arguments = sample.get("arguments") or [[""]]
    raw = sample.get("resps") or []
    generated = raw[0][0] if raw and isinstance(raw[0], list) and raw[0] and isinstance(raw[0][0], str) else None
    filtered = sample.get("filtered_resps")
    if isinstance(filtered, list) and len(filtered) == 1:
        filtered = filtered[0]
    return {
        "doc_id": sample.get("doc_id"), "filter": sample.get("filter"), "prompt": arguments[0][0],
        "target": sample.get("target"), "response": generated if generated is not None else _plain(raw),
        "filtered": _plain(filtered), "metrics": {m: _plain(sample.get(m)) for m in sample.get("metrics", [])},
    }


def _plain(value):
    """JSON-ready: numpy scalars and tuples to Python values and lists."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value

