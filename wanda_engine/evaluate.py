"""`python cli.py eval`: a model's task scores (lm-eval tasks and the engine's perplexity), one line per
task on the log, results.json / results.md / samples/ in --save.

    report = run_eval(EvalConfig(model="pruned/", tasks="wikitext2,squad,gsm8k,boolq", data_dir="data", limit=200))
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Callable

from .config import EvalConfig
from .data.files import check_data_dir
from .eval.harness import check_fits_context, check_task_limits, score_tasks
from .eval.tasks import TaskRequest, resolve_tasks
from .memory import peak_rss_mb
from .models import load_model
from .models.architecture import context_length
from .outputs import OutputDir
from .plan import check_seqlen_and_batch, default_seqlen, resolve_device, resolve_dtype
from .report import EvalReport, write_eval_report
from .versions import software_versions

Log = Callable[[str], None]


def run_eval(config: EvalConfig, log: Log = print) -> EvalReport:
    """Score one model on `config.tasks`; every check that needs no model is made before it loads."""
    started = time.perf_counter()
    check_seqlen_and_batch(config.seqlen, config.batch_size)
    check_task_limits(config.limit, config.max_gen_toks)
    check_data_dir(config.data_dir)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    tasks = resolve_tasks(config.tasks, TaskRequest(config.data_dir, config.num_fewshot, config.squad_unanswerable))
    output = OutputDir(config.save, "--save", config.overwrite) if config.save else None
    if output is not None:
        note = output.claim()
        if note:
            log(f"note: {note}")
    loaded = None
    try:
        loaded = load_model(config.model, dtype=dtype, device=device, cache_dir=config.cache_dir,
                            trust_remote_code=config.trust_remote_code, stream=False, log=log, progress=config.progress)
        seqlen = config.seqlen or default_seqlen(loaded.model.config, config.model is None)
        check_fits_context(tasks, seqlen, config.max_gen_toks, context_length(loaded.model.config))
        log(f"model: {loaded.name} ({loaded.why}; weights: {loaded.source}) on {device}, {dtype}")
        for task in tasks:
            log(f"task {task.name}: {task.source}")
        scores = score_tasks(loaded.model, loaded.tokenizer, tasks, limit=config.limit, batch_size=config.batch_size,
                             seqlen=seqlen, max_gen_toks=config.max_gen_toks, progress=config.progress, log=log)
        report = EvalReport(
            model=loaded.name, model_source=loaded.source, tasks=scores.results, device=device, dtype=dtype,
            seconds=time.perf_counter() - started, peak_rss_mb=peak_rss_mb(),
            versions=software_versions("transformers", "lm_eval"), config={**asdict(config), "seqlen": seqlen},
        )
        if output is not None:
            write_eval_report(output.target, report, scores.samples)
            log(f"results written to {output.target}/results.json, results.md and samples/")
        return report
    finally:
        if loaded is not None:
            loaded.close()
        if output is not None:
            output.release()

