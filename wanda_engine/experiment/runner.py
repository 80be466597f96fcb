"""`python cli.py experiment`: prune → fine-tune → evaluate for every row of the matrix, with the dense
model and each pruned model before fine-tuning as baselines.

Work is shared and kept: each step is a cell in DIR/cells/, named by what it does and a digest of its
settings, written atomically; a pruned model is made once for every row that needs it, and a rerun of an
interrupted matrix reuses every finished cell. DIR gets results.json, results.md and results.png.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from ..config import EvalConfig, ExperimentConfig, FinetuneConfig, PruneConfig
from ..data.files import check_data_dir
from ..errors import UserError
from ..eval.harness import check_task_limits
from ..eval.tasks import TaskRequest, resolve_tasks
from ..finetune.sources import load_finetune_data
from ..finetune.trainer import check_no_overlap
from ..locks import FileLock, LockBusy, lock_path_for
from ..outputs import write_text_atomic
from ..plan import resolve_device
from ..report.types import EvalReport
from .matrix import Matrix, load_matrix
from .plot import plot_results

Log = Callable[[str], None]
RESULTS_JSON, RESULTS_MD, RESULTS_PNG = "results.json", "results.md", "results.png"


@dataclass
class Cell:
    kind: str  # eval, prune, finetune
    label: str
    settings: dict[str, Any]

    @property
    def name(self) -> str:
        digest = hashlib.sha256(json.dumps(self.settings, sort_keys=True, default=str).encode()).hexdigest()[:10]
        return f"{self.kind}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', self.label)[:40]}-{digest}"


class Experiment:
    def __init__(self, config: ExperimentConfig, matrix: Matrix, log: Log) -> None:
        self.config, self.matrix, self.log = config, matrix, log
        self.root = Path(config.output).expanduser()
        self.cells = self.root / "cells"
        self.reused: list[str] = []
        self.made: list[str] = []
        # in every cell's key: results on another device (and so another default dtype) are other results
        self.device = resolve_device(config.device)

    # --- cells ---------------------------------------------------------------------------------

    def _run_cell(self, cell: Cell, make: Callable[[Path], None], done_marker: str) -> Path:
        path = self.cells / cell.name
        if (path / done_marker).exists():
            self.reused.append(cell.name)
            self.log(f"[experiment] reusing {cell.kind} {cell.label} ({path})")
            return path
        self.log(f"[experiment] {cell.kind} {cell.label} → {path}")
        make(path)
        self.made.append(cell.name)
        return path

    def evaluate(self, label: str, model: str | None, model_key: str | None) -> EvalReport:
        """Score `model`; `model_key` names it in the cell's key (the cell that made it, or the --model
        given), so that the key does not depend on where the output directory is."""
        eval_settings = dict(self.matrix.eval)
        if "seqlen" not in eval_settings and self.config.model is None:
            eval_settings["seqlen"] = 512  # as the embedded demo's perplexity, for dense and pruned alike
        cell = Cell("eval", label, {"model": model_key, "tasks": self.matrix.tasks, "data_dir": self.config.data_dir,
                                    "device": self.device, **eval_settings})
        limit = eval_settings.pop("task_limit", None)

        def make(path: Path) -> None:
            from ..evaluate import run_eval

            run_eval(EvalConfig(model=model, tasks=self.matrix.tasks, data_dir=self.config.data_dir, limit=limit,
                                device=self.config.device, cache_dir=self.config.cache_dir, save=str(path),
                                overwrite=True, progress=self.config.progress, **eval_settings), log=self.log)

        path = self._run_cell(cell, make, "results.json")
        return EvalReport.from_json(json.loads((path / "results.json").read_text()))

    def prune(self, calibration: str) -> Path:
        settings = {"model": self.config.model, "calibration_dataset": calibration, "sparsity_ratio": self.matrix.sparsity_ratio,
                    "sparsity_type": self.matrix.sparsity_type, "data_dir": self.config.data_dir, **self.matrix.prune}

        def make(path: Path) -> None:
            from ..pipeline import run_prune

            run_prune(PruneConfig(**{"eval": "none", **settings}, save_model=str(path / "model"), save=str(path / "report"),
                                  overwrite=True, device=self.config.device, cache_dir=self.config.cache_dir,
                                  progress=self.config.progress), log=self.log)

        cell = Cell("prune", calibration, {**settings, "device": self.device})
        return self._run_cell(cell, make, "report/report.json") / "model"

    def finetune(self, row, pruned: Path) -> Path:
        settings = {"model": str(pruned), "dataset": row.finetune, "template": row.template, "data_dir": self.config.data_dir,
                    **self.matrix.finetune}

        def make(path: Path) -> None:
            from ..finetune import run_finetune

            run_finetune(FinetuneConfig(**settings, output=str(path), overwrite=True, device=self.config.device,
                                        cache_dir=self.config.cache_dir, progress=self.config.progress), log=self.log)

        key = {**settings, "model": pruned.parent.name, "device": self.device}  # the pruning cell's name, not its path
        return self._run_cell(Cell("finetune", f"{row.finetune}-on-{pruned.parent.name}", key), make, "finetune.json")


def run_experiment(config: ExperimentConfig, log: Log = print) -> dict:
    started = time.perf_counter()
    if not config.output:
        raise UserError("--output is required: the directory for the matrix's cells and results")
    overrides = {key: getattr(config, key) for key in ("sparsity_ratio", "nsamples", "tasks", "task_limit", "max_gen_toks",
                                                       "max_steps", "finetune_seqlen", "lora")}
    matrix = load_matrix(config.config, overrides)
    check_data_dir(config.data_dir)
    # Every check that needs no model, before any work: the tasks' files, each row's fine-tuning data
    # (and that it is not a file the tasks score).
    tasks = resolve_tasks(matrix.tasks, TaskRequest(config.data_dir, matrix.eval.get("num_fewshot")))
    scored = [path for task in tasks for path in task.scored_files]
    for row in matrix.rows:
        check_no_overlap(load_finetune_data(row.finetune, config.data_dir), config.data_dir, scored)
    _check_stage_settings(config, matrix)
    root = Path(config.output).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_path_for(root))
    try:
        lock.acquire()
    except LockBusy as busy:
        raise UserError(f"--output {config.output!r}: another experiment is running in it ({busy.who()}); wait for it") from None
    try:
        experiment = Experiment(config, matrix, log)
        table = [{"label": "dense", "prune": "—", "finetune": "—",
                  "report": experiment.evaluate("dense", config.model, config.model)}]
        pruned = {}
        for row in matrix.rows:
            if row.prune not in pruned:
                pruned[row.prune] = experiment.prune(row.prune)
                table.append({"label": f"pruned ({row.prune})", "prune": row.prune, "finetune": "—",
                              "report": experiment.evaluate(f"pruned-{row.prune}", str(pruned[row.prune]),
                                                            pruned[row.prune].parent.name)})
        for row in matrix.rows:
            tuned = experiment.finetune(row, pruned[row.prune])
            table.append({"label": f"experiment {row.name}", "prune": row.prune, "finetune": row.finetune,
                          "report": experiment.evaluate(f"row-{row.name}", str(tuned), tuned.name)})
        results = {
            "matrix": asdict(matrix), "model": config.model or "embedded SmolLM2-135M-Instruct",
            "rows": [{**{k: v for k, v in entry.items() if k != "report"}, "scores": _scores(entry["report"]),
                      "sources": {r.task: r.source for r in entry["report"].tasks}} for entry in table],
            "cells_made": experiment.made, "cells_reused": experiment.reused,
            "seconds": time.perf_counter() - started,
        }
        write_text_atomic(root / RESULTS_JSON, json.dumps(results, indent=2) + "\n")
        write_text_atomic(root / RESULTS_MD, render_results(results))
        plot_results(results, root / RESULTS_PNG)
        log(f"[experiment] {len(table)} rows ({len(experiment.made)} cells made, {len(experiment.reused)} reused) in "
            f"{results['seconds']:.0f}s; {root / RESULTS_MD}")
        return results
    finally:
        lock.release()


def _check_stage_settings(config: ExperimentConfig, matrix: Matrix) -> None:
    """Every pruning's and fine-tune's settings checked as their commands check them, before any work."""
    from ..finetune.trainer import check_config
    from ..plan import check_seqlen_and_batch, make_plan

    for calibration in dict.fromkeys(row.prune for row in matrix.rows):
        make_plan(PruneConfig(**{"eval": "none", **matrix.prune}, model=config.model, calibration_dataset=calibration,
                              sparsity_ratio=matrix.sparsity_ratio, sparsity_type=matrix.sparsity_type,
                              data_dir=config.data_dir, device=config.device))
    for row in matrix.rows:
        check_config(FinetuneConfig(**matrix.finetune, dataset=row.finetune, template=row.template, output="cell",
                                    data_dir=config.data_dir))
    check_seqlen_and_batch(matrix.eval.get("seqlen"), matrix.eval.get("batch_size", EvalConfig.batch_size))
    check_task_limits(matrix.eval.get("task_limit"), matrix.eval.get("max_gen_toks", EvalConfig.max_gen_toks),
                      limit_flag="[eval] task_limit")


def _scores(report: EvalReport) -> dict[str, float | None]:
    return {f"{r.task} {metric}": value for r in report.tasks for metric, value in r.metrics.items()}


def render_results(results: dict) -> str:
    columns = list(dict.fromkeys(key for row in results["rows"] for key in row["scores"]))
    matrix = results["matrix"]
    lines = [
        f"# Experiment matrix: {results['model']}",
        "",
        f"{matrix['sparsity_type']} sparsity {matrix['sparsity_ratio']:g}; tasks {matrix['tasks']}; prune settings "
        f"{json.dumps(matrix['prune'])}; fine-tune settings {json.dumps(matrix['finetune'])}; evaluation "
        f"{json.dumps(matrix['eval'])}; {results['seconds'] / 60:.1f} min ({len(results['cells_made'])} cells made, "
        f"{len(results['cells_reused'])} reused).",
        "",
        "| row | prune data | fine-tune data | " + " | ".join(columns) + " |",
        "|---|---|---|" + "---|" * len(columns),
    ]
    for row in results["rows"]:
        values = [row["scores"].get(c) for c in columns]
        lines.append(f"| {row['label']} | {row['prune']} | {row['finetune']} | "
                     + " | ".join("—" if v is None else f"{v:.4g}" for v in values) + " |")
    lines += ["", "Evaluation data:", ""]
    lines += [f"- **{task}**: {source}" for task, source in results["rows"][0]["sources"].items()]
    return "\n".join(lines) + "\n"

