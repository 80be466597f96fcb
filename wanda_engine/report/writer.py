"""Rendering and writing the run report."""

from __future__ import annotations

import json
from pathlib import Path

from ..outputs import atomic_output_dir
from .plot import ALLOCATION_PNG, plot_allocation
from .types import EvalReport, Report, TaskResult


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _allocation_section(report: Report, plot_skipped: str | None) -> list[str]:
    allocation, block_sparsity = report.allocation, report.block_sparsity or []
    if not block_sparsity:
        return []
    importance = report.block_importance
    statistic = allocation.statistic
    values = importance.values(statistic) if statistic and importance is not None else None
    tiers = allocation.tiers or [None] * len(block_sparsity)
    types = allocation.block_types or [None] * len(block_sparsity)
    achieved = allocation.block_achieved or [None] * len(block_sparsity)
    settings = dict(allocation.settings or {})
    if "tier_delta" in settings and settings["tier_delta"] is None and allocation.tier_delta_used is not None:
        settings["tier_delta"] = f"auto ({allocation.tier_delta_used:.3g})"
    settings = ", ".join(f"{k}={v}" for k, v in settings.items()) or "—"
    lines = [
        "## Sparsity allocation",
        "",
        f"Policy **{allocation.policy}** ({settings}); parameter-weighted mean of the block targets "
        f"{_fmt(allocation.mean_ratio, 4)}{'' if allocation.mean_forced else ' (achieved, not forced to the target)'}; "
        f"achieved {report.actual_sparsity:.4f}.",
    ]
    if statistic:
        source = importance.source if importance is not None else "measured"
        where = "measured in this run" if source == "measured" else f"reused from {source}"
        lines.append(f"Block statistic: {statistic} ({where}; dense model, calibration data).")
    for note in allocation.notes or []:
        lines.append(f"Note: {note}.")
    lines.append("")
    if plot_skipped is None:
        lines += [f"![importance and sparsity per block]({ALLOCATION_PNG})", ""]
    else:
        lines += [f"(No plot: {plot_skipped}.)", ""]
    header = "| block | tier | type |" + (f" {statistic} |" if values else "") + " target | achieved |"
    lines += [header, "|---" * (header.count("|") - 1) + "|"]
    for index, ratio in enumerate(block_sparsity):
        row = f"| {index} | {tiers[index] or '—'} | {types[index] or '—'} |"
        if values:
            row += f" {_fmt(values[index], 4)} |"
        row += f" {ratio:.4f} | {_fmt(achieved[index], 4)} |"
        lines.append(row)
    lines.append("")
    return lines


def task_table(columns: dict[str, list[TaskResult]]) -> list[str]:
    """A Markdown table of task scores, one row per task and metric, one score column per model (e.g.
    dense, pruned), with the examples scored, the shots and each column's seconds."""
    columns = {label: results for label, results in columns.items() if results}
    if not columns:
        return []
    by_task = {label: {r.task: r for r in results} for label, results in columns.items()}
    labels = list(columns)
    # each task's first result in column order: its metrics, examples, shots and source head the row
    first = {}
    for results in columns.values():
        for result in results:
            first.setdefault(result.task, result)
    lines = [
        "| task | metric | " + " | ".join(labels) + " | examples | shots | " + " | ".join(f"{label} s" for label in labels) + " |",
        "|---|---|" + "---|" * len(labels) + "---|---|" + "---|" * len(labels),
    ]
    for task, head in first.items():
        values = [by_task[label].get(task) for label in labels]
        seconds = [f"{r.seconds:.1f}" if r else "—" for r in values]
        shots = "—" if head.num_fewshot is None else str(head.num_fewshot)
        for metric in head.metrics:
            scores = [_fmt(r.metrics.get(metric), 4) if r else "—" for r in values]
            lines.append(f"| {task} | {metric} | " + " | ".join(scores) + f" | {head.examples} "
                         f"{head.settings.get('unit', '')} | {shots} | " + " | ".join(seconds) + " |")
    lines += ["", "Sources:", ""]
    lines += [f"- **{task}**: {head.source}" for task, head in first.items()]
    return lines + [""]


def _prompts(results: list[TaskResult]) -> list[str]:
    lines = ["## First prompt of each task", ""]
    for result in results:
        if result.prompt:
            lines += [f"### {result.task}", "", "```text", result.prompt, "```", "",
                      f"Response: `{json.dumps(result.response, ensure_ascii=False)}`", ""]
    return lines if len(lines) > 2 else []


def render_eval_markdown(report: EvalReport) -> str:
    return "\n".join([
        f"# Task scores: {report.model}",
        "",
        f"Weights: {report.model_source}; {report.device}, {report.dtype}; {report.seconds:.1f}s in all, "
        f"peak RSS {report.peak_rss_mb:.0f} MB; lm-eval {report.versions.get('lm_eval', '?')}.",
        "",
        *task_table({"score": report.tasks}),
        *_prompts(report.tasks),
    ])


def write_eval_report(target: Path, report: EvalReport, samples: dict[str, list[dict]]) -> None:
    """results.json, results.md and samples/TASK.jsonl (every example's prompt, response and score),
    written atomically into `target`."""
    with atomic_output_dir(Path(target)) as tmp:
        (tmp / "results.json").write_text(json.dumps(report.to_json(), indent=2, default=str) + "\n")
        (tmp / "results.md").write_text(render_eval_markdown(report))
        if samples:
            (tmp / "samples").mkdir()
        for task, records in samples.items():
            with open(tmp / "samples" / f"{task}.jsonl", "w") as f:
                for record in records:
                    f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")


def render_markdown(report: Report, plot_skipped: str | None = None) -> str:
    """The Markdown report; `plot_skipped` is why the allocation plot is absent (None: it was written)."""
    lines = [
        f"# Pruning report: {report.model}",
        "",
        "| | |",
        "|---|---|",
        f"| method | {report.prune_method} ({report.sparsity_type}, target {report.sparsity_ratio:g}) |",
        f"| actual sparsity (pruned linears) | {report.actual_sparsity:.4f} |",
        f"| calibration | {report.calibration_dataset}: {report.nsamples} × {report.seqlen} tokens, seed {report.seed} |",
        f"| calibration detail | {report.calibration_description} |",
        f"| evaluation | {report.eval_dataset or 'none'} ({_fmt(report.eval_windows)} windows) |",
        f"| perplexity dense → pruned | {_fmt(report.ppl_dense)} → {_fmt(report.ppl_pruned)} |",
        f"| schedule / allocation | {report.schedule} / {report.sparsity_allocation} |",
        f"| device / dtype | {report.device} / {report.dtype} |",
        f"| peak RSS | {report.peak_rss_mb:.0f} MB |",
        "",
        "## Timings (s)",
        "",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {name} | {seconds:.2f} |" for name, seconds in report.timings.items()],
        "",
        "## Sparsity per layer",
        "",
        "| layer | sparsity |",
        "|---|---|",
        *[f"| {name} | {value:.4f} |" for name, value in report.per_layer.items()],
        "",
    ]
    # Before the long per-layer table, so the plot and the task scores are near the top.
    at = lines.index("## Sparsity per layer")
    tasks = task_table({"dense": report.tasks_dense, "pruned": report.tasks_pruned})
    lines[at:at] = (_allocation_section(report, plot_skipped) + (["## Task scores", "", *tasks] if tasks else [])
                    + _distributed_section(report))
    return "\n".join(lines)


def _distributed_section(report: Report) -> list[str]:
    parallel = report.distributed
    if parallel is None:
        return []

    def span(bounds: list[int] | None) -> str:
        return "—" if not bounds else f"{bounds[0]}–{bounds[1]} ({bounds[1] - bounds[0]})"

    return [
        "## Data parallel",
        "",
        f"{parallel.world_size} ranks, backend {parallel.backend}; each rank ran every block on its share of the "
        "calibration samples and evaluation windows (start–stop, count); each mask was selected by one rank and "
        "broadcast to the others.",
        "",
        "| rank | host | device | calibration samples | evaluation windows | prune s | peak RSS MB | peak device MB |",
        "|---:|---|---|---|---|---:|---:|---:|",
        *[f"| {r.rank} | {r.host} | {r.device} | {span(r.calibration_samples)} | {span(r.eval_windows)} | {r.prune_s:.1f} | "
          f"{r.peak_rss_mb:.0f} | {_fmt(r.peak_device_mb, 0)} |" for r in parallel.ranks],
        "",
    ]


def write_report(target: Path, report: Report) -> None:
    """Write report.json and report.md into `target` atomically."""
    with atomic_output_dir(Path(target)) as tmp:
        (tmp / "report.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
        plot_skipped = plot_allocation(report, tmp / ALLOCATION_PNG)
        (tmp / "report.md").write_text(render_markdown(report, plot_skipped))
